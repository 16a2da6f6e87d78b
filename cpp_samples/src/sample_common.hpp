// What the ONNX Runtime and TensorRT samples share: command line, image listing, batching, JSON
// output and annotated images. Needs OpenCV (image IO); the inference is each sample's own.
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "yoloworld/opencv.hpp"
#include "yoloworld/yoloworld.hpp"

namespace sample {

namespace fs = std::filesystem;
using yoloworld::Error;

struct Options {
    std::string model, source, out_dir;
    int batch = 1;
    int threads = 0;  // 0: the runtime's default
    // unset (< 0 / empty) -> the manifest's nms settings
    double conf = -1, iou = -1;
    int max_det = -1;
    bool agnostic = false;
};

inline void usage(const char* prog, const char* model_kind) {
    std::cerr << "usage: " << prog << " <" << model_kind << "> <image|folder> [--batch N] [--out DIR]\n"
              << "       [--conf F] [--iou F] [--max-det N] [--agnostic] [--threads N]\n"
              << "Prints detections as JSON on stdout; --out writes annotated images. The manifest\n"
              << "<model>.json written by yoloworld-export must sit next to the model.\n";
}

inline Options parse_args(int argc, char** argv, const char* model_kind) {
    Options o;
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) throw Error(a + " needs a value");
            return argv[++i];
        };
        if (a == "--batch") o.batch = std::stoi(next());
        else if (a == "--out") o.out_dir = next();
        else if (a == "--conf") o.conf = std::stod(next());
        else if (a == "--iou") o.iou = std::stod(next());
        else if (a == "--max-det") o.max_det = std::stoi(next());
        else if (a == "--threads") o.threads = std::stoi(next());
        else if (a == "--agnostic") o.agnostic = true;
        else if (a == "-h" || a == "--help") { usage(argv[0], model_kind); std::exit(0); }
        else if (!a.empty() && a[0] == '-') throw Error("unknown option " + a);
        else positional.push_back(a);
    }
    if (positional.size() != 2) { usage(argv[0], model_kind); throw Error("expected a model and an image source"); }
    o.model = positional[0];
    o.source = positional[1];
    if (o.batch < 1) throw Error("--batch must be >= 1");
    if (o.conf >= 1.0) throw Error("--conf must be in [0, 1)");
    if (o.iou == 0.0 || o.iou > 1.0) throw Error("--iou must be in (0, 1]");
    if (o.max_det == 0) throw Error("--max-det must be >= 1");
    return o;
}

// Thresholds: the command line where given, else the manifest's nms settings.
inline yoloworld::PostprocessParams postprocess_params(const Options& o, const yoloworld::Manifest& m) {
    yoloworld::PostprocessParams p;
    p.conf = static_cast<float>(o.conf >= 0 ? o.conf : m.nms.conf);
    p.iou = static_cast<float>(o.iou > 0 ? o.iou : m.nms.iou);
    p.max_det = o.max_det > 0 ? o.max_det : m.nms.max_det;
    p.agnostic = o.agnostic || m.nms.agnostic;
    p.pre_nms_topk = m.nms.pre_nms_topk;
    return p;
}

inline yoloworld::NormaliseParams normalise_params(const yoloworld::Manifest& m) {
    return {m.pad_value, m.scale, m.channel_order == "RGB"};
}

// A file, or a folder's images sorted by name (sdk.images.expand_sources: same suffixes).
inline std::vector<std::string> list_images(const std::string& source) {
    static const char* suffixes[] = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"};
    const fs::path p(source);
    if (fs::is_regular_file(p)) return {source};
    if (!fs::is_directory(p)) throw Error("image '" + source + "' does not exist");
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(p)) {
        std::string ext = entry.path().extension().string();
        std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
        if (std::find(std::begin(suffixes), std::end(suffixes), ext) != std::end(suffixes))
            files.push_back(entry.path().string());
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) throw Error("folder '" + source + "' holds no images");
    return files;
}

// Collects per-image results, prints them as one JSON array and writes annotated images.
class Reporter {
public:
    Reporter(const std::vector<std::string>& names, std::string out_dir) : names_(names), out_dir_(std::move(out_dir)) {
        if (!out_dir_.empty()) fs::create_directories(out_dir_);
        std::cout << "[";
    }
    ~Reporter() { std::cout << (first_ ? "]\n" : "\n]\n") << std::flush; }

    void add(const std::string& source, const cv::Mat& bgr, const std::vector<yoloworld::Detection>& dets) {
        std::cout << (first_ ? "\n" : ",\n") << " {\"source\": " << yoloworld::json_quote(source)
                  << ", \"image_hw\": [" << bgr.rows << ", " << bgr.cols << "], \"detections\": [";
        first_ = false;
        for (size_t i = 0; i < dets.size(); ++i)
            std::cout << (i ? ", " : "") << yoloworld::detection_json(dets[i], names_);
        std::cout << "]}";
        if (!out_dir_.empty()) {
            cv::Mat canvas = bgr.clone();
            yoloworld::draw_detections(canvas, dets, names_);
            const fs::path dst = fs::path(out_dir_) / (fs::path(source).stem().string() + ".jpg");
            if (!cv::imwrite(dst.string(), canvas)) std::cerr << "warning: cannot write " << dst << "\n";
        }
    }

private:
    const std::vector<std::string>& names_;
    std::string out_dir_;
    bool first_ = true;
};

// One output copied to the host: float32 data in `f`, integer data in `i`.
struct HostTensor {
    std::vector<int64_t> shape;
    std::vector<float> f;
    std::vector<int32_t> i;
};
using Outputs = std::map<std::string, HostTensor>;

inline const HostTensor& get(const Outputs& outs, const std::string& name) {
    auto it = outs.find(name);
    if (it == outs.end()) throw Error("the model returned no output '" + name + "'");
    return it->second;
}

// Batch item b's detections from whichever output form the manifest declares.
inline std::vector<yoloworld::Detection> detections_for(const Outputs& outs, size_t b,
                                                 const yoloworld::Manifest& m, const yoloworld::LetterboxInfo& info,
                                                 const yoloworld::PostprocessParams& p) {
    if (m.end_to_end()) {
        const HostTensor& num = get(outs, "num_dets");
        const HostTensor& boxes = get(outs, "det_boxes");
        const HostTensor& scores = get(outs, "det_scores");
        const HostTensor& classes = get(outs, "det_classes");
        const size_t k = static_cast<size_t>(scores.shape.at(1));
        if (num.i.empty() || classes.i.empty()) throw Error("num_dets/det_classes must be integer tensors");
        return yoloworld::unpack_nms_outputs(num.i[b], boxes.f.data() + b * k * 4, scores.f.data() + b * k,
                                             classes.i.data() + b * k, k, info, p.conf, p.max_det);
    }
    if (outs.count("scores")) {  // exported raw form: decoded, one column per class
        const HostTensor& scores = get(outs, "scores");
        const HostTensor& boxes = get(outs, "boxes");
        const size_t a = static_cast<size_t>(scores.shape.at(1));
        const int c = static_cast<int>(scores.shape.at(2));
        return yoloworld::postprocess_image(scores.f.data() + b * a * c, boxes.f.data() + b * a * 4, a, c, info, p);
    }
    // per-level head outputs (cls_logits_i: B x C x H x W, box_dists_i: B x 4R x H x W)
    std::vector<yoloworld::LevelOutput> levels;
    for (size_t l = 0; l < m.strides.size(); ++l) {
        const HostTensor& cls = get(outs, "cls_logits_" + std::to_string(l));
        const HostTensor& box = get(outs, "box_dists_" + std::to_string(l));
        const int c = static_cast<int>(cls.shape.at(1)), r4 = static_cast<int>(box.shape.at(1));
        const int h = static_cast<int>(cls.shape.at(2)), w = static_cast<int>(cls.shape.at(3));
        levels.push_back({cls.f.data() + b * c * h * w, box.f.data() + b * r4 * h * w, c, r4 / 4, h, w, m.strides[l]});
    }
    std::vector<float> scores, boxes;
    yoloworld::decode_head_outputs(levels, scores, boxes);
    return yoloworld::postprocess_image(scores.data(), boxes.data(), boxes.size() / 4, levels.at(0).num_classes, info, p);
}

}  // namespace sample
