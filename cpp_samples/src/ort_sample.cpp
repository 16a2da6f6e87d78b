// ONNX Runtime sample (C++ API, CPU): runs a model exported by `yoloworld-export` (raw or in-graph NMS
// output) on an image or a folder, prints detections as JSON and writes annotated images.
//
//   yoloworld_ort model.onnx images/ --batch 4 --out annotated/
#include <onnxruntime_cxx_api.h>

#include <chrono>
#include <cstring>
#include <map>

#include "sample_common.hpp"

namespace {

using yoloworld::Error;

// An output tensor copied out as float32 / int32 (the manifest fixes the types; check them anyway).
template <typename T>
std::vector<T> copy_tensor(const Ort::Value& v, const std::string& name) {
    const auto info = v.GetTensorTypeAndShapeInfo();
    const size_t n = info.GetElementCount();
    std::vector<T> out(n);
    switch (info.GetElementType()) {
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: {
            const float* p = v.GetTensorData<float>();
            for (size_t i = 0; i < n; ++i) out[i] = static_cast<T>(p[i]);
            break;
        }
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: {
            const int32_t* p = v.GetTensorData<int32_t>();
            for (size_t i = 0; i < n; ++i) out[i] = static_cast<T>(p[i]);
            break;
        }
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: {
            const int64_t* p = v.GetTensorData<int64_t>();
            for (size_t i = 0; i < n; ++i) out[i] = static_cast<T>(p[i]);
            break;
        }
        default:
            throw Error("output '" + name + "' has an unsupported element type " +
                        std::to_string(static_cast<int>(info.GetElementType())));
    }
    return out;
}

class OrtDetector {
public:
    OrtDetector(const std::string& path, const yoloworld::Manifest& m, int threads)
        : manifest_(m), env_(ORT_LOGGING_LEVEL_WARNING, "yoloworld"), session_(nullptr) {
        if (m.open_vocabulary)
            throw Error(path + ": an open-vocabulary export takes text embeddings as inputs; this sample runs "
                        "fixed-vocabulary exports (export with --classes)");
        if (m.output_form == "trt_nms")
            throw Error(path + ": output_form trt_nms uses TensorRT's EfficientNMS plugin, which ONNX Runtime "
                        "cannot run; use the TensorRT sample or export with --output-form nms/raw");
        Ort::SessionOptions opts;
        opts.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
        if (threads > 0) opts.SetIntraOpNumThreads(threads);
        session_ = Ort::Session(env_, path.c_str(), opts);
        Ort::AllocatorWithDefaultOptions alloc;
        for (size_t i = 0; i < session_.GetOutputCount(); ++i)
            model_outputs_.push_back(session_.GetOutputNameAllocated(i, alloc).get());
        for (const std::string& name : m.output_names)
            if (std::find(model_outputs_.begin(), model_outputs_.end(), name) == model_outputs_.end())
                throw Error(path + ": the manifest names output '" + name + "' that the model does not have");
    }

    // images: B x 3 x H x W float32 -> every output named in the manifest
    sample::Outputs infer(std::vector<float>& images, int64_t batch) {
        const int64_t shape[4] = {batch, 3, manifest_.imgsz_h, manifest_.imgsz_w};
        const auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
        Ort::Value input = Ort::Value::CreateTensor<float>(mem, images.data(), images.size(), shape, 4);
        const char* in_name = manifest_.input_name.c_str();
        std::vector<const char*> out_names;
        for (const auto& n : manifest_.output_names) out_names.push_back(n.c_str());
        auto outputs = session_.Run(Ort::RunOptions{nullptr}, &in_name, &input, 1, out_names.data(), out_names.size());
        sample::Outputs out;
        for (size_t k = 0; k < outputs.size(); ++k) {
            const std::string& name = manifest_.output_names[k];
            sample::HostTensor t;
            t.shape = outputs[k].GetTensorTypeAndShapeInfo().GetShape();
            const auto type = outputs[k].GetTensorTypeAndShapeInfo().GetElementType();
            if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) t.f = copy_tensor<float>(outputs[k], name);
            else t.i = copy_tensor<int32_t>(outputs[k], name);
            out[name] = std::move(t);
        }
        return out;
    }

private:
    const yoloworld::Manifest& manifest_;
    Ort::Env env_;
    Ort::Session session_;
    std::vector<std::string> model_outputs_;
};

int run(int argc, char** argv) {
    const sample::Options opt = sample::parse_args(argc, argv, "model.onnx");
    const yoloworld::Manifest m = yoloworld::read_manifest(opt.model);
    if (m.imgsz_h != m.imgsz_w) throw Error("only square inputs are supported, manifest imgsz is not square");
    const auto params = sample::postprocess_params(opt, m);
    const auto norm = sample::normalise_params(m);
    const std::vector<std::string> files = sample::list_images(opt.source);
    int batch = std::min(opt.batch, m.max_batch > 0 ? m.max_batch : opt.batch);
    if (!m.dynamic_batch && batch != 1) {
        std::cerr << "note: " << opt.model << " has a static batch of 1; running one image at a time\n";
        batch = 1;
    }
    OrtDetector det(opt.model, m, opt.threads);
    const size_t size = static_cast<size_t>(m.imgsz_h), item = 3 * size * size;
    std::cerr << "model " << opt.model << ": output_form " << m.output_form << ", imgsz " << size << ", "
              << m.class_names.size() << " classes, " << files.size() << " image(s), batch " << batch << "\n";

    sample::Reporter report(m.class_names, opt.out_dir);
    double infer_ms = 0;
    for (size_t start = 0; start < files.size(); start += batch) {
        const size_t n = std::min(files.size() - start, static_cast<size_t>(batch));
        std::vector<cv::Mat> imgs;
        std::vector<yoloworld::LetterboxInfo> infos;
        std::vector<float> input(n * item);
        for (size_t b = 0; b < n; ++b) {
            imgs.push_back(yoloworld::read_image(files[start + b]));
            infos.push_back(yoloworld::letterbox_into(imgs.back(), static_cast<int>(size), norm, input.data() + b * item));
        }
        const auto t0 = std::chrono::steady_clock::now();
        const auto outs = det.infer(input, static_cast<int64_t>(n));
        infer_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        for (size_t b = 0; b < n; ++b) report.add(files[start + b], imgs[b], sample::detections_for(outs, b, m, infos[b], params));
    }
    std::cerr << "inference: " << infer_ms / files.size() << " ms per image\n";
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const Ort::Exception& e) {
        std::cerr << "error (ONNX Runtime): " << e.what() << "\n";
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
    }
    return 2;
}
