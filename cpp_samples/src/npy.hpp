// Minimal .npy (format 1.0/2.0/3.0, C order, little-endian) reading and writing for the core check
// program: the Python tests exchange arrays with it this way.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "yoloworld/json.hpp"

namespace npy {

struct Array {
    std::string descr;  // '<f4', '|u1', '<i4', '<i8', '<f8'
    std::vector<size_t> shape;
    std::vector<char> bytes;

    size_t size() const {
        size_t n = 1;
        for (size_t s : shape) n *= s;
        return n;
    }
    // The data converted to T (float32 arrays as written, others cast).
    template <typename T>
    std::vector<T> as() const {
        std::vector<T> out(size());
        auto conv = [&](auto tag) {
            using S = decltype(tag);
            for (size_t i = 0; i < out.size(); ++i) {
                S v;
                std::memcpy(&v, bytes.data() + i * sizeof(S), sizeof(S));
                out[i] = static_cast<T>(v);
            }
        };
        if (descr == "<f4") conv(float{});
        else if (descr == "<f8") conv(double{});
        else if (descr == "<i4") conv(int32_t{});
        else if (descr == "<i8") conv(int64_t{});
        else if (descr == "|u1") conv(uint8_t{});
        else throw yoloworld::Error("npy: unsupported dtype " + descr);
        return out;
    }
};

// The value of 'key': in the header dict, e.g. "'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
inline std::string header_field(const std::string& header, const std::string& key) {
    const size_t k = header.find("'" + key + "'");
    if (k == std::string::npos) throw yoloworld::Error("npy: header lacks " + key);
    size_t v = header.find(':', k) + 1;
    while (header[v] == ' ') ++v;
    const char open = header[v];
    const char close = open == '\'' ? '\'' : open == '(' ? ')' : ',';
    const size_t end = header.find(close, v + 1);
    return header.substr(open == '\'' || open == '(' ? v + 1 : v, end - v - (open == '\'' || open == '(' ? 1 : 0));
}

inline Array load(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw yoloworld::Error("npy: cannot open " + path);
    char magic[8];
    f.read(magic, 8);
    if (!f || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw yoloworld::Error("npy: not a .npy file: " + path);
    uint32_t header_len = 0;
    if (magic[6] == 1) {
        uint8_t b[2];
        f.read(reinterpret_cast<char*>(b), 2);
        header_len = b[0] | (b[1] << 8);
    } else {
        uint8_t b[4];
        f.read(reinterpret_cast<char*>(b), 4);
        header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (uint32_t(b[3]) << 24);
    }
    std::string header(header_len, '\0');
    f.read(header.data(), header_len);
    Array a;
    a.descr = header_field(header, "descr");
    if (header_field(header, "fortran_order").find("False") == std::string::npos)
        throw yoloworld::Error("npy: Fortran order is not supported: " + path);
    const std::string shape = header_field(header, "shape");
    size_t pos = 0;
    while (pos < shape.size()) {
        while (pos < shape.size() && (shape[pos] == ' ' || shape[pos] == ',')) ++pos;
        if (pos >= shape.size()) break;
        size_t used = 0;
        a.shape.push_back(std::stoull(shape.substr(pos), &used));
        pos += used;
    }
    const size_t item = a.descr == "|u1" ? 1 : a.descr.back() == '8' ? 8 : 4;
    a.bytes.resize(a.size() * item);
    f.read(a.bytes.data(), static_cast<std::streamsize>(a.bytes.size()));
    if (!f) throw yoloworld::Error("npy: truncated data in " + path);
    return a;
}

template <typename T>
const char* descr_of();
template <> inline const char* descr_of<float>() { return "<f4"; }
template <> inline const char* descr_of<int32_t>() { return "<i4"; }
template <> inline const char* descr_of<uint8_t>() { return "|u1"; }

template <typename T>
void save(const std::string& path, const T* data, const std::vector<size_t>& shape) {
    std::string dims;
    size_t n = 1;
    for (size_t s : shape) {
        dims += std::to_string(s) + ", ";
        n *= s;
    }
    if (shape.size() > 1) dims.resize(dims.size() - 1);  // "(2, 3)" but "(5,)"
    std::string header = "{'descr': '" + std::string(descr_of<T>()) + "', 'fortran_order': False, 'shape': (" + dims + "), }";
    header.append(63 - (10 + header.size()) % 64, ' ');  // pad so the data starts 64-byte aligned
    header += '\n';
    std::ofstream f(path, std::ios::binary);
    const uint16_t len = static_cast<uint16_t>(header.size());
    f.write("\x93NUMPY\x01\x00", 8);
    const char lb[2] = {static_cast<char>(len & 0xFF), static_cast<char>(len >> 8)};
    f.write(lb, 2);
    f << header;
    f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n * sizeof(T)));
    if (!f) throw yoloworld::Error("npy: cannot write " + path);
}

}  // namespace npy
