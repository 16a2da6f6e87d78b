// Optional OpenCV helpers for the samples: image reading as sdk.images (any depth/channels -> BGR
// uint8), the letterbox resize with the SDK's interpolation rule, drawing.
#pragma once

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <string>
#include <vector>

#include "postprocess.hpp"
#include "preprocess.hpp"

namespace yoloworld {

// Any decoded image -> BGR uint8, as sdk.images.to_bgr: 16-bit by integer // 257, gray and BGRA
// converted. Throws yoloworld::Error otherwise.
inline cv::Mat to_bgr(const cv::Mat& image, const std::string& name) {
    cv::Mat img = image;
    if (img.depth() == CV_16U) {  // floor division, not convertTo's rounding
        cv::Mat out(img.size(), CV_MAKETYPE(CV_8U, img.channels()));
        const int n = img.cols * img.channels();
        for (int y = 0; y < img.rows; ++y) {
            const uint16_t* s = img.ptr<uint16_t>(y);
            uint8_t* d = out.ptr<uint8_t>(y);
            for (int x = 0; x < n; ++x) d[x] = static_cast<uint8_t>(s[x] / 257);
        }
        img = out;
    }
    if (img.depth() != CV_8U) throw Error(name + ": expected an 8-bit or 16-bit image");
    if (img.empty()) throw Error(name + ": empty image");
    cv::Mat bgr;
    if (img.channels() == 1) cv::cvtColor(img, bgr, cv::COLOR_GRAY2BGR);
    else if (img.channels() == 4) cv::cvtColor(img, bgr, cv::COLOR_BGRA2BGR);
    else if (img.channels() == 3) bgr = img;
    else throw Error(name + ": unsupported channel count " + std::to_string(img.channels()));
    return bgr;
}

inline cv::Mat read_image(const std::string& path) {
    cv::Mat img = cv::imread(path, cv::IMREAD_UNCHANGED);
    if (img.empty()) throw Error("cannot decode image '" + path + "': not an image file or corrupt");
    return to_bgr(img, path);
}

// The keep-ratio resize of sdk.preprocess.letterbox (INTER_AREA when shrinking, bilinear when
// enlarging); returns `bgr` itself when no resize is needed.
inline cv::Mat letterbox_resize(const cv::Mat& bgr, const LetterboxInfo& info) {
    if (!info.needs_resize()) return bgr;
    cv::Mat out;
    cv::resize(bgr, out, cv::Size(info.resized_w, info.resized_h), 0, 0,
               info.shrinking() ? cv::INTER_AREA : cv::INTER_LINEAR);
    return out;
}

// Letterbox + normalise one BGR image into `out` (3 x size x size float32).
inline LetterboxInfo letterbox_into(const cv::Mat& bgr, int size, const NormaliseParams& params, float* out) {
    const LetterboxInfo info = letterbox_geometry(bgr.rows, bgr.cols, size);
    cv::Mat resized = letterbox_resize(bgr, info);
    if (!resized.isContinuous()) resized = resized.clone();
    pad_and_normalise(resized.ptr<uint8_t>(), resized.step[0], info, params, out);
    return info;
}

// The letterboxed BGR uint8 image (size x size), as sdk.preprocess.letterbox: for checks and display.
inline cv::Mat letterbox_image(const cv::Mat& bgr, int size, int pad_value = 114) {
    const LetterboxInfo info = letterbox_geometry(bgr.rows, bgr.cols, size);
    cv::Mat out(size, size, CV_8UC3, cv::Scalar::all(pad_value));
    letterbox_resize(bgr, info).copyTo(out(cv::Rect(info.left, info.top, info.resized_w, info.resized_h)));
    return out;
}

inline void draw_detections(cv::Mat& bgr, const std::vector<Detection>& dets, const std::vector<std::string>& names) {
    for (const Detection& d : dets) {
        // a fixed colour per class, spread over the hue circle
        const unsigned h = static_cast<unsigned>(d.class_id) * 2654435761u;
        const cv::Scalar colour(60 + (h & 0x7F), 60 + ((h >> 8) & 0x7F), 60 + ((h >> 16) & 0x7F));
        const cv::Point p1(cvRound(d.xyxy[0]), cvRound(d.xyxy[1])), p2(cvRound(d.xyxy[2]), cvRound(d.xyxy[3]));
        cv::rectangle(bgr, p1, p2, colour, 2);
        const std::string name = d.class_id >= 0 && static_cast<size_t>(d.class_id) < names.size()
                                     ? names[d.class_id] : std::to_string(d.class_id);
        char label[32];
        std::snprintf(label, sizeof label, " %.2f", d.score);
        int baseline = 0;
        const std::string text = name + label;
        const cv::Size ts = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, 0.45, 1, &baseline);
        const cv::Point org(p1.x, std::max(p1.y, ts.height + 2));
        cv::rectangle(bgr, org + cv::Point(0, baseline - ts.height - 4), org + cv::Point(ts.width, baseline), colour, cv::FILLED);
        cv::putText(bgr, text, org + cv::Point(0, -2), cv::FONT_HERSHEY_SIMPLEX, 0.45, cv::Scalar(255, 255, 255), 1, cv::LINE_AA);
    }
}

}  // namespace yoloworld
