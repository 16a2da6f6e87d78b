#!/usr/bin/env bash
# Fetch what the C++ samples need into cpp_samples/.deps (git-ignored); safe to run again.
#
#   ONNX Runtime: C/C++ API headers from Debian trixie's libonnxruntime-dev (downloaded with a private
#                 apt configuration, extracted, never installed) + the library the Python wheel in
#                 .venv ships (libonnxruntime.so.1.x), symlinked as libonnxruntime.so{,.1}.
#   OpenCV:       Debian's libopencv-{core,imgproc,imgcodecs}-dev, installed with apt (needs root).
#
# Never fails the caller: what could not be done is printed, and the tests that need it skip.
# Environment: PYTHON (default .venv/bin/python), YW_DEPS_DIR (default cpp_samples/.deps),
#              YW_SKIP_APT=1 to not touch apt at all.
set -u

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"   # cpp_samples/
ROOT="$(cd "$HERE/.." && pwd)"
D="${YW_DEPS_DIR:-$HERE/.deps}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
ORT="$D/onnxruntime"
say() { echo "[setup_deps] $*"; }

mkdir -p "$D" || { say "cannot create $D; nothing done"; exit 0; }

# --- ONNX Runtime headers -------------------------------------------------------------------------
fetch_ort_headers() {
    if [ -f "$ORT/include/onnxruntime_cxx_api.h" ]; then
        say "ORT headers: already in $ORT/include ($(cat "$ORT/include/VERSION" 2>/dev/null || echo '?'))"
        return 0
    fi
    if [ "${YW_SKIP_APT:-0}" = 1 ] || ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
        say "ORT headers: NOT fetched (no apt-get/dpkg-deb or YW_SKIP_APT=1); the ORT sample will be skipped"
        return 0
    fi
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [ -f "$keyring" ] || { say "ORT headers: NOT fetched ($keyring missing)"; return 0; }
    local A="$D/apt"
    mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/etc" "$A/deb"
    echo "deb [signed-by=$keyring] http://deb.debian.org/debian trixie main" > "$A/etc/sources.list"
    # a private apt state: the system's sources and package lists are left alone
    local O=(-o "Dir::Etc::SourceList=$A/etc/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
             -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache" -q)
    say "ORT headers: downloading libonnxruntime-dev (Debian trixie) without installing it"
    if ! apt-get "${O[@]}" update >"$A/update.log" 2>&1; then
        say "ORT headers: NOT fetched (apt-get update for trixie failed, see $A/update.log)"; return 0
    fi
    if ! (cd "$A/deb" && apt-get "${O[@]}" download libonnxruntime-dev >"$A/download.log" 2>&1); then
        say "ORT headers: NOT fetched (apt-get download failed, see $A/download.log)"; return 0
    fi
    local deb
    deb="$(ls "$A"/deb/libonnxruntime-dev_*.deb 2>/dev/null | head -1)"
    rm -rf "$A/root" && dpkg-deb -x "$deb" "$A/root" || { say "ORT headers: NOT extracted from $deb"; return 0; }
    if [ ! -f "$A/root/usr/include/onnxruntime/onnxruntime_cxx_api.h" ]; then
        say "ORT headers: $deb has no usr/include/onnxruntime/onnxruntime_cxx_api.h"; return 0
    fi
    mkdir -p "$ORT" && rm -rf "$ORT/include" && cp -r "$A/root/usr/include/onnxruntime" "$ORT/include"
    basename "$deb" .deb | sed 's/^libonnxruntime-dev_//' > "$ORT/include/VERSION"
    # keep only the headers: the .deb, the package lists and the extracted tree go
    rm -rf "$A"
    say "ORT headers: installed into $ORT/include ($(cat "$ORT/include/VERSION"))"
}

# --- ONNX Runtime library (from the Python wheel) -------------------------------------------------
link_ort_library() {
    local lib=""
    if [ -x "$PY" ]; then
        lib="$("$PY" - <<'PYEOF' 2>/dev/null
import glob, os
import onnxruntime
capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
libs = sorted(glob.glob(os.path.join(capi, "libonnxruntime.so.1.*")))
print(libs[-1] if libs else "")
PYEOF
)"
    fi
    if [ -z "$lib" ] || [ ! -f "$lib" ]; then
        say "ORT library: NOT found (no onnxruntime wheel with libonnxruntime.so.1.* for $PY); the ORT sample will be skipped"
        return 0
    fi
    mkdir -p "$ORT/lib"
    # the SONAME is libonnxruntime.so.1; the linker wants libonnxruntime.so
    ln -sfn "$lib" "$ORT/lib/libonnxruntime.so.1"
    ln -sfn "$lib" "$ORT/lib/libonnxruntime.so"
    say "ORT library: $ORT/lib/libonnxruntime.so -> $lib"
}

# --- OpenCV (system packages) ---------------------------------------------------------------------
install_opencv() {
    local pkgs=(libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev)
    if command -v dpkg-query >/dev/null && \
       dpkg-query -W -f='${Status}\n' "${pkgs[@]}" 2>/dev/null | grep -c "install ok installed" | grep -qx 3; then
        say "OpenCV: already installed ($(dpkg-query -W -f='${Version}' libopencv-core-dev))"
        return 0
    fi
    if [ "${YW_SKIP_APT:-0}" = 1 ] || ! command -v apt-get >/dev/null; then
        say "OpenCV: NOT installed (no apt-get or YW_SKIP_APT=1); the OpenCV parts will be skipped"
        return 0
    fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
            say "OpenCV: NOT installed (not root and no password-less sudo); install ${pkgs[*]} yourself"
            return 0
        fi
    fi
    say "OpenCV: apt-get install --no-install-recommends ${pkgs[*]} (about 160 MB on disk)"
    local t0=$SECONDS log="$D/opencv_apt.log"
    if $sudo apt-get update -q >"$log" 2>&1 && \
       DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${pkgs[@]}" >>"$log" 2>&1; then
        say "OpenCV: installed $(dpkg-query -W -f='${Version}' libopencv-core-dev) in $((SECONDS - t0)) s"
    else
        say "OpenCV: NOT installed (apt-get failed, see $log); the OpenCV parts will be skipped"
    fi
}

fetch_ort_headers
link_ort_library
install_opencv
exit 0
