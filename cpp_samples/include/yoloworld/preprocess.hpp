// Letterbox geometry and the network input, identical to sdk/preprocess.py (the official pipeline:
// keep-ratio resize with int() truncation, centred pad of 114 with the odd pixel at the bottom/right,
// BGR -> RGB, / 255 as a division).
//
// The resize itself is not here (the core has no dependency): resize to `resized_h x resized_w` with
// INTER_AREA when shrinking and INTER_LINEAR when enlarging (see opencv.hpp), then call
// pad_and_normalise.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace yoloworld {

struct LetterboxInfo {
    double scale_w = 1.0, scale_h = 1.0;  // input pixels per original pixel (Python floats)
    int top = 0, bottom = 0, left = 0, right = 0;
    int orig_h = 0, orig_w = 0;
    int resized_h = 0, resized_w = 0;
    int size = 0;

    bool needs_resize() const { return resized_h != orig_h || resized_w != orig_w; }
    // INTER_AREA when shrinking, bilinear when enlarging (mmcv 'area' / 'bilinear')
    bool shrinking() const { return resized_w < orig_w; }

    // Network-input xyxy -> original-image xyxy, float32 arithmetic as LetterboxInfo.boxes_to_original.
    void to_original(const float in[4], float out[4]) const {
        const float sx = static_cast<float>(scale_w), sy = static_cast<float>(scale_h);
        const float l = static_cast<float>(left), t = static_cast<float>(top);
        out[0] = (in[0] - l) / sx;
        out[1] = (in[1] - t) / sy;
        out[2] = (in[2] - l) / sx;
        out[3] = (in[3] - t) / sy;
    }
};

// Where an `h x w` image goes in a `size x size` input (sdk.preprocess.letterbox_geometry).
inline LetterboxInfo letterbox_geometry(int h, int w, int size) {
    LetterboxInfo info;
    const double ratio = std::min(static_cast<double>(size) / std::max(h, w),
                                  static_cast<double>(size) / std::min(h, w));
    int rh = h, rw = w;
    if (ratio != 1.0) {  // int() truncation, as the official pipeline (the long side can end 1 px short)
        rh = static_cast<int>(h * ratio);
        rw = static_cast<int>(w * ratio);
    }
    const int pad_h = size - rh, pad_w = size - rw;
    // Python's round(pad // 2 - 0.1) (round half to even; pads are never negative here)
    auto half = [](int pad) {
        const int floor_half = pad >= 0 ? pad / 2 : -((-pad + 1) / 2);
        return static_cast<int>(std::nearbyint(floor_half - 0.1));
    };
    info.top = half(pad_h);
    info.bottom = pad_h - info.top;
    info.left = half(pad_w);
    info.right = pad_w - info.left;
    info.scale_w = static_cast<double>(rw) / w;
    info.scale_h = static_cast<double>(rh) / h;
    info.orig_h = h;
    info.orig_w = w;
    info.resized_h = rh;
    info.resized_w = rw;
    info.size = size;
    return info;
}

struct NormaliseParams {
    int pad_value = 114;
    double scale = 1.0 / 255.0;
    bool rgb = true;  // manifest channel_order == "RGB": swap the BGR source
};

namespace detail {

// x * scale, computed as x / (1 / scale) when that is a whole number: the SDK divides by 255, and
// multiplying by float(1/255) differs from dividing in the last bit.
struct Normaliser {
    explicit Normaliser(double scale) {
        const double inv = 1.0 / scale;
        divide = std::fabs(inv - std::nearbyint(inv)) < 1e-6;
        factor = divide ? static_cast<float>(std::nearbyint(inv)) : static_cast<float>(scale);
    }
    float operator()(uint8_t v) const {
        const float x = static_cast<float>(v);
        return divide ? x / factor : x * factor;
    }
    bool divide;
    float factor;
};

}  // namespace detail

// Pad + normalise one already-resized BGR image (resized_h x resized_w, 3 channels, `row_stride`
// bytes per row) into `out`: float32 CHW (3 x size x size), the network input of one batch item.
inline void pad_and_normalise(const uint8_t* resized_bgr, size_t row_stride, const LetterboxInfo& info,
                              const NormaliseParams& params, float* out) {
    const detail::Normaliser norm(params.scale);
    const int s = info.size;
    const size_t plane = static_cast<size_t>(s) * s;
    const float pad = norm(static_cast<uint8_t>(params.pad_value));
    std::fill(out, out + 3 * plane, pad);
    for (int c = 0; c < 3; ++c) {
        const int src_c = params.rgb ? 2 - c : c;  // BGR source -> RGB planes
        float* dst = out + c * plane;
        for (int y = 0; y < info.resized_h; ++y) {
            const uint8_t* row = resized_bgr + y * row_stride;
            float* drow = dst + static_cast<size_t>(y + info.top) * s + info.left;
            for (int x = 0; x < info.resized_w; ++x) drow[x] = norm(row[3 * x + src_c]);
        }
    }
}

}  // namespace yoloworld
