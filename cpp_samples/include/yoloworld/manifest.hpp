// The export manifest: the `<artifact>.json` sidecar `yoloworld-export` writes next to every
// .onnx / .engine (same fields as sdk/manifest.py). Everything pre/post-processing needs comes from
// here; nothing is guessed from the model file.
#pragma once

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "json.hpp"

namespace yoloworld {

struct NmsSettings {
    double conf = 0.25;
    double iou = 0.7;
    int max_det = 300;
    bool agnostic = false;
    int pre_nms_topk = 30000;  // host NMS only; in-graph NMS considers every candidate above conf
};

struct Manifest {
    static constexpr const char* kFormat = "yoloworld-sdk-export";
    static constexpr int kFormatVersion = 2;  // 2 added dynamic_hw

    std::vector<std::string> class_names;
    int imgsz_h = 640, imgsz_w = 640;
    std::string output_form = "raw";  // raw | nms | trt_nms
    NmsSettings nms;
    bool dynamic_batch = true;
    int max_batch = 32;
    bool dynamic_hw = false;  // any height/width (multiples of 32); these samples feed the square input
    std::string precision = "fp32";
    std::vector<int> strides{8, 16, 32};
    int pad_value = 114;
    double scale = 1.0 / 255.0;
    std::string channel_order = "RGB";
    std::string input_name = "images";
    std::vector<std::string> output_names{"scores", "boxes"};
    bool open_vocabulary = false;
    int vocab_capacity = 0;
    int format_version = 1;

    bool end_to_end() const { return output_form == "nms" || output_form == "trt_nms"; }

    static Manifest from_json(const std::string& text, const std::string& source = "manifest");
};

namespace detail {

inline std::vector<std::string> string_list(const Json& j) {
    std::vector<std::string> out;
    for (const Json& v : j.as_array()) out.push_back(v.as_string());
    return out;
}

inline int to_int(const Json& j) { return static_cast<int>(j.as_int()); }

}  // namespace detail

inline Manifest Manifest::from_json(const std::string& text, const std::string& source) {
    Json root;
    try {
        root = Json::parse(text);
    } catch (const Error& e) {
        throw Error(source + ": manifest is not valid JSON: " + e.what());
    }
    const Json* fmt = root.find("format");
    if (!root.is_object() || !fmt || fmt->type() != Json::Type::String || fmt->as_string() != kFormat)
        throw Error(source + ": not a yoloworld-sdk export manifest");
    Manifest m;
    try {
        if (const Json* v = root.find("format_version")) m.format_version = detail::to_int(*v);
        if (m.format_version > kFormatVersion)
            throw Error("manifest version " + std::to_string(m.format_version) + " is newer than this reader (" +
                        std::to_string(kFormatVersion) + ")");
        m.class_names = detail::string_list(root.at("class_names"));
        const auto& imgsz = root.at("imgsz").as_array();
        if (imgsz.size() != 2) throw Error("imgsz must be [height, width]");
        m.imgsz_h = detail::to_int(imgsz[0]);
        m.imgsz_w = detail::to_int(imgsz[1]);
        if (const Json* v = root.find("output_form")) m.output_form = v->as_string();
        if (const Json* n = root.find("nms")) {
            if (const Json* v = n->find("conf")) m.nms.conf = v->as_number();
            if (const Json* v = n->find("iou")) m.nms.iou = v->as_number();
            if (const Json* v = n->find("max_det")) m.nms.max_det = detail::to_int(*v);
            if (const Json* v = n->find("agnostic")) m.nms.agnostic = v->as_bool();
            if (const Json* v = n->find("pre_nms_topk")) m.nms.pre_nms_topk = detail::to_int(*v);
        }
        if (const Json* v = root.find("dynamic_batch")) m.dynamic_batch = v->as_bool();
        if (const Json* v = root.find("max_batch")) m.max_batch = detail::to_int(*v);
        if (const Json* v = root.find("dynamic_hw")) m.dynamic_hw = v->as_bool();
        if (const Json* v = root.find("precision")) m.precision = v->as_string();
        if (const Json* v = root.find("strides")) {
            m.strides.clear();
            for (const Json& s : v->as_array()) m.strides.push_back(detail::to_int(s));
        }
        if (const Json* v = root.find("pad_value")) m.pad_value = detail::to_int(*v);
        if (const Json* v = root.find("scale")) m.scale = v->as_number();
        if (const Json* v = root.find("channel_order")) m.channel_order = v->as_string();
        if (const Json* v = root.find("input_name")) m.input_name = v->as_string();
        if (const Json* v = root.find("output_names")) m.output_names = detail::string_list(*v);
        if (const Json* v = root.find("open_vocabulary")) m.open_vocabulary = v->as_bool();
        if (const Json* v = root.find("vocab_capacity")) m.vocab_capacity = detail::to_int(*v);
    } catch (const Error& e) {
        throw Error(source + ": " + e.what());
    }
    if (m.output_form != "raw" && m.output_form != "nms" && m.output_form != "trt_nms")
        throw Error(source + ": unknown output_form '" + m.output_form + "'");
    if (m.channel_order != "RGB" && m.channel_order != "BGR")
        throw Error(source + ": unknown channel_order '" + m.channel_order + "'");
    if (m.imgsz_h <= 0 || m.imgsz_w <= 0 || m.scale <= 0)
        throw Error(source + ": imgsz and scale must be positive");
    return m;
}

// `model.onnx` -> `model.onnx.json`, as sdk.manifest.sidecar_path.
inline std::string sidecar_path(const std::string& artifact) { return artifact + ".json"; }

inline Manifest read_manifest(const std::string& artifact) {
    const std::string path = sidecar_path(artifact);
    std::ifstream f(path, std::ios::binary);
    if (!f)
        throw Error(artifact + ": no manifest " + path + " beside it; export the model with yoloworld-export");
    std::ostringstream text;
    text << f.rdbuf();
    return Manifest::from_json(text.str(), path);
}

}  // namespace yoloworld
