// Greedy NMS with mmcv semantics, as sdk/nms.py: float32 IoU with plain (x2 - x1) * (y2 - y1) areas,
// a box is suppressed when IoU > threshold; class-aware NMS compares labels (as sdk/nms.py does: mmcv's
// coordinate-offset trick resolves only 1/16 px at 1203 classes and lets a box below -1 px reach another class).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <numeric>
#include <vector>

namespace yoloworld {

using Box = std::array<float, 4>;  // x1, y1, x2, y2

// Same operation order as sdk.nms.box_iou, so the float32 result is bit-identical (0 for an empty union).
inline float box_iou(const Box& a, const Box& b) {
    const float xx1 = std::max(a[0], b[0]);
    const float yy1 = std::max(a[1], b[1]);
    const float xx2 = std::min(a[2], b[2]);
    const float yy2 = std::min(a[3], b[3]);
    const float inter = std::max(xx2 - xx1, 0.0f) * std::max(yy2 - yy1, 0.0f);
    const float area_a = (a[2] - a[0]) * (a[3] - a[1]);
    const float area_b = (b[2] - b[0]) * (b[3] - b[1]);
    const float uni = area_a + area_b - inter;
    return uni > 0.0f ? inter / uni : 0.0f;
}

// Indices into `scores` in descending order; ties keep their input order (numpy's stable argsort).
inline std::vector<size_t> argsort_descending(const std::vector<float>& scores) {
    std::vector<size_t> order(scores.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t i, size_t j) { return scores[i] > scores[j]; });
    return order;
}

// Kept indices, best first. `labels` non-null: only boxes of one label suppress each other. `max_keep` <= 0:
// no limit (greedy NMS keeps in score order, so stopping early is exact).
inline std::vector<size_t> nms(const std::vector<Box>& boxes, const std::vector<float>& scores,
                               float iou_threshold, int max_keep = 0, const std::vector<int>* labels = nullptr) {
    const std::vector<size_t> order = argsort_descending(scores);
    std::vector<char> suppressed(boxes.size(), 0);
    std::vector<size_t> keep;
    for (size_t oi = 0; oi < order.size(); ++oi) {
        const size_t i = order[oi];
        if (suppressed[i]) continue;
        keep.push_back(i);
        if (max_keep > 0 && static_cast<int>(keep.size()) >= max_keep) break;
        for (size_t oj = oi + 1; oj < order.size(); ++oj) {
            const size_t j = order[oj];
            if (suppressed[j] || (labels != nullptr && (*labels)[j] != (*labels)[i])) continue;
            // `!(iou <= t)` would suppress NaN (NaN boxes); numpy keeps it (NaN > t is false): compare the same way
            if (box_iou(boxes[i], boxes[j]) > iou_threshold) suppressed[j] = 1;
        }
    }
    return keep;
}

// Class-aware NMS (boxes of different labels never suppress each other), or agnostic.
inline std::vector<size_t> batched_nms(const std::vector<Box>& boxes, const std::vector<float>& scores,
                                       const std::vector<int>& labels, float iou_threshold, int max_keep = 0,
                                       bool agnostic = false) {
    if (boxes.empty()) return {};
    return nms(boxes, scores, iou_threshold, max_keep, agnostic ? nullptr : &labels);
}

}  // namespace yoloworld
