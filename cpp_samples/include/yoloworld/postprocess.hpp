// Decoding and post-processing of head outputs, as sdk/postprocess.py (mmyolo YOLOv8 test_cfg):
// sigmoid scores; multi-label candidates with score > conf, the best pre_nms_topk; boxes mapped to the
// original image; class-aware NMS; max_det; clipping to the image after NMS.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "json.hpp"
#include "nms.hpp"
#include "preprocess.hpp"

namespace yoloworld {

struct Detection {
    Box xyxy;  // original-image pixels
    float score;
    int class_id;
};

struct PostprocessParams {
    float conf = 0.25f;
    float iou = 0.7f;
    int max_det = 300;
    bool agnostic = false;
    int pre_nms_topk = 30000;
};

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }  // exp overflow -> 0, the limit

// One level of per-level raw head outputs for one image: class logits (C, H, W) and DFL logits
// (4 * R, H, W), both contiguous float32.
struct LevelOutput {
    const float* cls_logits;
    const float* box_dists;
    int num_classes;
    int reg_max;  // R: bins per side
    int height, width;
    int stride;
};

// Per-level outputs -> scores (A x C, sigmoid) and boxes (A x 4, xyxy input pixels); anchors level by
// level, row-major with x fastest, centres at (i + 0.5) * stride (sdk.postprocess.decode_head_outputs).
inline void decode_head_outputs(const std::vector<LevelOutput>& levels, std::vector<float>& scores,
                                std::vector<float>& boxes) {
    scores.clear();
    boxes.clear();
    std::vector<float> p;
    for (const LevelOutput& lv : levels) {
        const int hw = lv.height * lv.width, r_max = lv.reg_max;
        p.resize(r_max);
        const float stride = static_cast<float>(lv.stride);
        for (int n = 0; n < hw; ++n) {
            for (int c = 0; c < lv.num_classes; ++c) scores.push_back(sigmoid(lv.cls_logits[c * hw + n]));
            float dist[4];
            for (int side = 0; side < 4; ++side) {
                // softmax over the R bins (max subtracted), then the expected bin index
                const float* logits = lv.box_dists + static_cast<size_t>(side) * r_max * hw + n;
                float mx = logits[0];
                for (int r = 1; r < r_max; ++r) mx = std::max(mx, logits[r * hw]);
                float sum = 0.0f;
                for (int r = 0; r < r_max; ++r) sum += (p[r] = std::exp(logits[r * hw] - mx));
                float expect = 0.0f;
                for (int r = 0; r < r_max; ++r) expect += (p[r] / sum) * static_cast<float>(r);
                dist[side] = expect * stride;
            }
            const float cx = (static_cast<float>(n % lv.width) + 0.5f) * stride;
            const float cy = (static_cast<float>(n / lv.width) + 0.5f) * stride;
            boxes.insert(boxes.end(), {cx - dist[0], cy - dist[1], cx + dist[2], cy + dist[3]});
        }
    }
}

inline void clip_to_image(Box& b, const LetterboxInfo& info) {
    const float w = static_cast<float>(info.orig_w), h = static_cast<float>(info.orig_h);
    b[0] = std::min(std::max(b[0], 0.0f), w);
    b[2] = std::min(std::max(b[2], 0.0f), w);
    b[1] = std::min(std::max(b[1], 0.0f), h);
    b[3] = std::min(std::max(b[3], 0.0f), h);
}

// One image of the raw form: scores (A x C), boxes (A x 4) xyxy input pixels -> detections in original
// pixels, best first (sdk.postprocess.postprocess_image).
inline std::vector<Detection> postprocess_image(const float* scores, const float* boxes, size_t num_anchors,
                                                int num_classes, const LetterboxInfo& info,
                                                const PostprocessParams& params) {
    struct Candidate { size_t anchor; int label; float score; };
    std::vector<Candidate> cands;
    for (size_t a = 0; a < num_anchors; ++a)  // multi-label: every (anchor, class) pair above conf
        for (int c = 0; c < num_classes; ++c) {
            const float s = scores[a * num_classes + c];
            if (s > params.conf) cands.push_back({a, c, s});
        }
    std::stable_sort(cands.begin(), cands.end(),
                     [](const Candidate& x, const Candidate& y) { return x.score > y.score; });
    if (params.pre_nms_topk > 0 && cands.size() > static_cast<size_t>(params.pre_nms_topk))
        cands.resize(params.pre_nms_topk);

    std::vector<Box> xyxy(cands.size());
    std::vector<float> values(cands.size());
    std::vector<int> labels(cands.size());
    for (size_t i = 0; i < cands.size(); ++i) {
        info.to_original(boxes + cands[i].anchor * 4, xyxy[i].data());
        values[i] = cands[i].score;
        labels[i] = cands[i].label;
    }
    const std::vector<size_t> keep = batched_nms(xyxy, values, labels, params.iou, params.max_det, params.agnostic);
    std::vector<Detection> out;
    out.reserve(keep.size());
    for (size_t k : keep) {
        Detection d{xyxy[k], values[k], labels[k]};
        clip_to_image(d.xyxy, info);
        out.push_back(d);
    }
    return out;
}

// One image of an end-to-end artifact's padded outputs (num_dets, det_boxes K x 4, det_scores K,
// det_classes K) -> detections in original pixels (sdk.postprocess.unpack_nms_outputs). conf and
// max_det can only tighten what the graph applied.
inline std::vector<Detection> unpack_nms_outputs(int64_t num_dets, const float* det_boxes, const float* det_scores,
                                                 const int32_t* det_classes, size_t capacity,
                                                 const LetterboxInfo& info, float conf, int max_det) {
    const size_t k = static_cast<size_t>(std::clamp<int64_t>(num_dets, 0, static_cast<int64_t>(capacity)));
    std::vector<Detection> out;
    for (size_t i = 0; i < k && static_cast<int>(out.size()) < max_det; ++i) {
        if (!(det_scores[i] > conf)) continue;
        Detection d;
        info.to_original(det_boxes + i * 4, d.xyxy.data());
        clip_to_image(d.xyxy, info);
        d.score = det_scores[i];
        d.class_id = det_classes[i];
        out.push_back(d);
    }
    return out;
}

// {"xyxy": [...], "score": s, "class_id": c, "class_name": "..."}; 9 significant digits round-trip a float.
inline std::string detection_json(const Detection& d, const std::vector<std::string>& names) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "{\"xyxy\": [%.9g, %.9g, %.9g, %.9g], \"score\": %.9g, \"class_id\": %d, ",
                  d.xyxy[0], d.xyxy[1], d.xyxy[2], d.xyxy[3], d.score, d.class_id);
    const bool known = d.class_id >= 0 && static_cast<size_t>(d.class_id) < names.size();
    return std::string(buf) + "\"class_name\": " + json_quote(known ? names[d.class_id] : std::to_string(d.class_id)) + "}";
}

}  // namespace yoloworld
