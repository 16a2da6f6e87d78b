// Check program for the core: the Python tests (tests/cpp) feed it .npy arrays, read back its results
// and compare them with the Python SDK. Each sub-command exercises one piece of the core.
//
//   geometry H W SIZE                         -> "rh rw top bottom left right scale_w scale_h"
//   normalise resized.npy H W SIZE PAD SCALE RGB|BGR out.npy
//   letterbox image.npy SIZE out_image.npy out_input.npy          (OpenCV builds only)
//   decode STRIDES out_scores.npy out_boxes.npy cls_0.npy box_0.npy [cls_1.npy box_1.npy ...]
//   postprocess scores.npy boxes.npy H W SIZE CONF IOU MAX_DET AGNOSTIC TOPK out.npy
//   unpack NUM_DETS det_boxes.npy det_scores.npy det_classes.npy H W SIZE CONF MAX_DET out.npy
//   manifest artifact                          -> the parsed <artifact>.json, re-serialised
//   features                                   -> "opencv=0|1"
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "npy.hpp"
#include "yoloworld/yoloworld.hpp"
#ifdef YOLOWORLD_WITH_OPENCV
#include "yoloworld/opencv.hpp"
#endif

namespace {

using yoloworld::Error;

int to_i(const char* s) { return std::atoi(s); }
double to_d(const char* s) { return std::strtod(s, nullptr); }

// (K, 6) float32 rows: x1 y1 x2 y2 score class_id
void save_detections(const std::string& path, const std::vector<yoloworld::Detection>& dets) {
    std::vector<float> rows;
    for (const auto& d : dets)
        rows.insert(rows.end(), {d.xyxy[0], d.xyxy[1], d.xyxy[2], d.xyxy[3], d.score, static_cast<float>(d.class_id)});
    npy::save(path, rows.data(), {dets.size(), 6});
}

std::string list_json(const std::vector<std::string>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + yoloworld::json_quote(v[i]);
    return s + "]";
}

int run(int argc, char** argv) {
    if (argc < 2) throw Error("usage: yoloworld_core_check <command> ... (see the source)");
    const std::string cmd = argv[1];
    auto need = [&](int n) {
        if (argc != n + 2) throw Error(cmd + ": expected " + std::to_string(n) + " arguments");
    };
    if (cmd == "features") {
#ifdef YOLOWORLD_WITH_OPENCV
        std::cout << "opencv=1\n";
#else
        std::cout << "opencv=0\n";
#endif
        return 0;
    }
    if (cmd == "geometry") {
        need(3);
        const auto g = yoloworld::letterbox_geometry(to_i(argv[2]), to_i(argv[3]), to_i(argv[4]));
        std::printf("%d %d %d %d %d %d %.17g %.17g\n", g.resized_h, g.resized_w, g.top, g.bottom, g.left, g.right,
                    g.scale_w, g.scale_h);
        return 0;
    }
    if (cmd == "normalise") {
        need(8);
        const npy::Array img = npy::load(argv[2]);
        const auto g = yoloworld::letterbox_geometry(to_i(argv[3]), to_i(argv[4]), to_i(argv[5]));
        if (img.shape.size() != 3 || img.shape[0] != size_t(g.resized_h) || img.shape[1] != size_t(g.resized_w) ||
            img.shape[2] != 3)
            throw Error("normalise: the image must be the resized (rh, rw, 3) uint8 image");
        const std::vector<uint8_t> px = img.as<uint8_t>();
        const yoloworld::NormaliseParams p{to_i(argv[6]), to_d(argv[7]), std::string(argv[8]) == "RGB"};
        std::vector<float> out(3 * size_t(g.size) * g.size);
        yoloworld::pad_and_normalise(px.data(), size_t(g.resized_w) * 3, g, p, out.data());
        npy::save(argv[9], out.data(), {3, size_t(g.size), size_t(g.size)});
        return 0;
    }
    if (cmd == "letterbox") {
        need(4);
#ifdef YOLOWORLD_WITH_OPENCV
        const npy::Array img = npy::load(argv[2]);
        std::vector<uint8_t> px = img.as<uint8_t>();
        const cv::Mat bgr(int(img.shape.at(0)), int(img.shape.at(1)), CV_8UC3, px.data());
        const int size = to_i(argv[3]);
        const cv::Mat boxed = yoloworld::letterbox_image(bgr, size);
        npy::save(argv[4], boxed.ptr<uint8_t>(), {size_t(size), size_t(size), 3});
        std::vector<float> input(3 * size_t(size) * size);
        yoloworld::letterbox_into(bgr, size, yoloworld::NormaliseParams{}, input.data());
        npy::save(argv[5], input.data(), {3, size_t(size), size_t(size)});
        return 0;
#else
        throw Error("letterbox: built without OpenCV");
#endif
    }
    if (cmd == "decode") {
        if (argc < 7 || (argc - 5) % 2) throw Error("decode: STRIDES out_scores out_boxes (cls box)...");
        std::vector<int> strides;
        std::stringstream ss(argv[2]);
        for (std::string s; std::getline(ss, s, ',');) strides.push_back(std::stoi(s));
        std::vector<std::vector<float>> data;  // keeps the level arrays alive
        std::vector<yoloworld::LevelOutput> levels;
        for (int a = 5, l = 0; a < argc; a += 2, ++l) {
            const npy::Array cls = npy::load(argv[a]), box = npy::load(argv[a + 1]);
            data.push_back(cls.as<float>());
            data.push_back(box.as<float>());
            levels.push_back({nullptr, nullptr, int(cls.shape.at(0)), int(box.shape.at(0)) / 4, int(cls.shape.at(1)),
                              int(cls.shape.at(2)), strides.at(l)});
        }
        for (size_t l = 0; l < levels.size(); ++l) {
            levels[l].cls_logits = data[2 * l].data();
            levels[l].box_dists = data[2 * l + 1].data();
        }
        std::vector<float> scores, boxes;
        yoloworld::decode_head_outputs(levels, scores, boxes);
        const size_t anchors = boxes.size() / 4;
        npy::save(argv[3], scores.data(), {anchors, size_t(levels[0].num_classes)});
        npy::save(argv[4], boxes.data(), {anchors, 4});
        return 0;
    }
    if (cmd == "postprocess") {
        need(11);
        const npy::Array s = npy::load(argv[2]), b = npy::load(argv[3]);
        const std::vector<float> scores = s.as<float>(), boxes = b.as<float>();
        const auto g = yoloworld::letterbox_geometry(to_i(argv[4]), to_i(argv[5]), to_i(argv[6]));
        yoloworld::PostprocessParams p;
        p.conf = float(to_d(argv[7]));
        p.iou = float(to_d(argv[8]));
        p.max_det = to_i(argv[9]);
        p.agnostic = to_i(argv[10]) != 0;
        p.pre_nms_topk = to_i(argv[11]);
        save_detections(argv[12], yoloworld::postprocess_image(scores.data(), boxes.data(), s.shape.at(0),
                                                               int(s.shape.at(1)), g, p));
        return 0;
    }
    if (cmd == "unpack") {
        need(10);
        const npy::Array bx = npy::load(argv[3]), sc = npy::load(argv[4]), cl = npy::load(argv[5]);
        const std::vector<float> boxes = bx.as<float>(), scores = sc.as<float>();
        const std::vector<int32_t> classes = cl.as<int32_t>();
        const auto g = yoloworld::letterbox_geometry(to_i(argv[6]), to_i(argv[7]), to_i(argv[8]));
        save_detections(argv[11], yoloworld::unpack_nms_outputs(std::atoll(argv[2]), boxes.data(), scores.data(),
                                                                classes.data(), sc.shape.at(0), g,
                                                                float(to_d(argv[9])), to_i(argv[10])));
        return 0;
    }
    if (cmd == "manifest") {
        need(1);
        const yoloworld::Manifest m = yoloworld::read_manifest(argv[2]);
        std::ostringstream o;
        o.precision(17);
        o << "{\"class_names\": " << list_json(m.class_names) << ", \"imgsz\": [" << m.imgsz_h << ", " << m.imgsz_w
          << "], \"output_form\": " << yoloworld::json_quote(m.output_form) << ", \"nms\": {\"conf\": " << m.nms.conf
          << ", \"iou\": " << m.nms.iou << ", \"max_det\": " << m.nms.max_det
          << ", \"agnostic\": " << (m.nms.agnostic ? "true" : "false") << ", \"pre_nms_topk\": " << m.nms.pre_nms_topk
          << "}, \"dynamic_batch\": " << (m.dynamic_batch ? "true" : "false") << ", \"max_batch\": " << m.max_batch
          << ", \"dynamic_hw\": " << (m.dynamic_hw ? "true" : "false")
          << ", \"precision\": " << yoloworld::json_quote(m.precision) << ", \"strides\": [";
        for (size_t i = 0; i < m.strides.size(); ++i) o << (i ? ", " : "") << m.strides[i];
        o << "], \"pad_value\": " << m.pad_value << ", \"scale\": " << m.scale
          << ", \"channel_order\": " << yoloworld::json_quote(m.channel_order)
          << ", \"input_name\": " << yoloworld::json_quote(m.input_name)
          << ", \"output_names\": " << list_json(m.output_names)
          << ", \"open_vocabulary\": " << (m.open_vocabulary ? "true" : "false")
          << ", \"vocab_capacity\": " << m.vocab_capacity << "}\n";
        std::cout << o.str();
        return 0;
    }
    throw Error("unknown command " + cmd);
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 2;
    }
}
