// TensorRT 10 sample: runs an engine built by `yoloworld-export --engine trt` (raw or end-to-end NMS
// output, its `<engine>.json` manifest beside it) on an image or a folder, with one CUDA stream and a
// dynamic batch within the engine's optimisation profile 0. Prints detections as JSON, writes
// annotated images.
//
//   yoloworld_trt model.engine images/ --batch 8 --out annotated/
//
// Uses the TensorRT 10 tensor-address API: setInputShape, setTensorAddress, enqueueV3 (the binding
// index API was removed in 10.0). Not built or run in this repository's CI (no CUDA/TensorRT there).
#include <NvInfer.h>
#include <NvInferPlugin.h>
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>

#include "sample_common.hpp"

namespace {

using yoloworld::Error;

#define CUDA_CHECK(call)                                                                             \
    do {                                                                                             \
        const cudaError_t err_ = (call);                                                             \
        if (err_ != cudaSuccess)                                                                     \
            throw Error(std::string(#call) + " failed: " + cudaGetErrorString(err_));                \
    } while (0)

class Logger : public nvinfer1::ILogger {
    void log(Severity severity, const char* msg) noexcept override {
        if (severity <= Severity::kWARNING) std::cerr << "[TensorRT] " << msg << "\n";
    }
};

size_t element_size(nvinfer1::DataType t) {
    switch (t) {
        case nvinfer1::DataType::kFLOAT: return 4;
        case nvinfer1::DataType::kHALF: return 2;
        case nvinfer1::DataType::kINT32: return 4;
        case nvinfer1::DataType::kINT64: return 8;
        case nvinfer1::DataType::kINT8: return 1;
        case nvinfer1::DataType::kUINT8: return 1;
        case nvinfer1::DataType::kBOOL: return 1;
        default: throw Error("unsupported TensorRT data type " + std::to_string(static_cast<int>(t)));
    }
}

int64_t volume(const nvinfer1::Dims& d) {
    int64_t v = 1;
    for (int i = 0; i < d.nbDims; ++i) v *= d.d[i];
    return v;
}

// IEEE half -> float (for engines whose outputs were left in float16)
float half_to_float(uint16_t h) {
    uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
    if (exp == 0 && mant == 0) {
        bits = sign;
    } else if (exp == 0) {  // subnormal: normalise the mantissa
        int e = -1;
        do { mant <<= 1; ++e; } while (!(mant & 0x400));
        bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3FF) << 13;
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | mant << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | mant << 13;
    }
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

struct Binding {
    std::string name;
    nvinfer1::DataType type;
    size_t capacity_bytes = 0;  // for the largest batch
    void* device = nullptr;
    void* host = nullptr;  // pinned, so the copies are asynchronous
};

class TrtDetector {
public:
    TrtDetector(const std::string& path, const yoloworld::Manifest& m) : manifest_(m) {
        if (m.open_vocabulary)
            throw Error(path + ": an open-vocabulary export takes text embeddings as inputs; this sample runs "
                        "fixed-vocabulary engines");
        std::ifstream f(path, std::ios::binary);
        if (!f) throw Error("cannot read engine " + path);
        const std::vector<char> blob((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        // registers TensorRT's bundled plugins: the trt_nms form's EfficientNMS_TRT lives in libnvinfer_plugin
        if (!initLibNvInferPlugins(&logger_, "")) throw Error("initLibNvInferPlugins failed");
        runtime_.reset(nvinfer1::createInferRuntime(logger_));
        if (!runtime_) throw Error("createInferRuntime failed");
        // the engine must come from the same TensorRT version and GPU family (the manifest records them)
        engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
        if (!engine_) throw Error(path + ": TensorRT cannot deserialise it (other TensorRT version or GPU?)");
        context_.reset(engine_->createExecutionContext());
        if (!context_) throw Error("createExecutionContext failed");
        CUDA_CHECK(cudaStreamCreate(&stream_));

        const char* in = m.input_name.c_str();
        if (engine_->getTensorIOMode(in) != nvinfer1::TensorIOMode::kINPUT)
            throw Error(path + ": the engine has no input '" + m.input_name + "'");
        if (engine_->getTensorDataType(in) != nvinfer1::DataType::kFLOAT)
            throw Error(path + ": input '" + m.input_name + "' must be float32");
        const nvinfer1::Dims dims = engine_->getTensorShape(in);
        if (dims.nbDims != 4) throw Error("the input must be 4-D (B, 3, H, W)");
        if (dims.d[0] == -1) {  // dynamic batch: the range of optimisation profile 0
            min_batch_ = engine_->getProfileShape(in, 0, nvinfer1::OptProfileSelector::kMIN).d[0];
            max_batch_ = engine_->getProfileShape(in, 0, nvinfer1::OptProfileSelector::kMAX).d[0];
        } else {
            min_batch_ = max_batch_ = dims.d[0];
        }
        if (!context_->setInputShape(in, input_dims(max_batch_))) throw Error("setInputShape failed");

        // one device + pinned host buffer per I/O tensor, sized for the largest batch; the addresses
        // never change, so they are bound once
        for (int i = 0; i < engine_->getNbIOTensors(); ++i) {
            Binding b;
            b.name = engine_->getIOTensorName(i);
            b.type = engine_->getTensorDataType(b.name.c_str());
            const nvinfer1::Dims shape = context_->getTensorShape(b.name.c_str());
            if (volume(shape) < 0) throw Error("output '" + b.name + "' has a data-dependent shape; not supported");
            b.capacity_bytes = static_cast<size_t>(volume(shape)) * element_size(b.type);
            CUDA_CHECK(cudaMalloc(&b.device, b.capacity_bytes));
            CUDA_CHECK(cudaMallocHost(&b.host, b.capacity_bytes));
            if (!context_->setTensorAddress(b.name.c_str(), b.device)) throw Error("setTensorAddress failed for " + b.name);
            if (b.name == m.input_name) input_ = bindings_.size();
            bindings_.push_back(b);
        }
        for (const std::string& name : m.output_names)
            if (engine_->getTensorIOMode(name.c_str()) != nvinfer1::TensorIOMode::kOUTPUT)
                throw Error(path + ": the manifest names output '" + name + "' that the engine does not have");
    }

    ~TrtDetector() {
        for (Binding& b : bindings_) {
            cudaFree(b.device);
            cudaFreeHost(b.host);
        }
        if (stream_) cudaStreamDestroy(stream_);
    }
    TrtDetector(const TrtDetector&) = delete;
    TrtDetector& operator=(const TrtDetector&) = delete;

    int min_batch() const { return static_cast<int>(min_batch_); }
    int max_batch() const { return static_cast<int>(max_batch_); }

    // images: n x 3 x H x W float32, min_batch <= n <= max_batch -> the manifest's outputs for n items
    sample::Outputs infer(const std::vector<float>& images, int64_t n) {
        Binding& in = bindings_[input_];
        const size_t bytes = images.size() * sizeof(float);
        if (bytes > in.capacity_bytes) throw Error("batch larger than the engine profile");
        if (!context_->setInputShape(in.name.c_str(), input_dims(n))) throw Error("setInputShape failed");
        std::memcpy(in.host, images.data(), bytes);
        CUDA_CHECK(cudaMemcpyAsync(in.device, in.host, bytes, cudaMemcpyHostToDevice, stream_));
        if (!context_->enqueueV3(stream_)) throw Error("enqueueV3 failed");
        std::vector<std::pair<Binding*, nvinfer1::Dims>> outs;
        for (Binding& b : bindings_) {
            if (&b == &in) continue;
            const nvinfer1::Dims shape = context_->getTensorShape(b.name.c_str());
            CUDA_CHECK(cudaMemcpyAsync(b.host, b.device, static_cast<size_t>(volume(shape)) * element_size(b.type),
                                       cudaMemcpyDeviceToHost, stream_));
            outs.emplace_back(&b, shape);
        }
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        sample::Outputs result;
        for (auto& [b, shape] : outs) result[b->name] = to_host_tensor(*b, shape);
        return result;
    }

private:
    nvinfer1::Dims input_dims(int64_t n) const {
        nvinfer1::Dims d;
        d.nbDims = 4;
        d.d[0] = n;
        d.d[1] = 3;
        d.d[2] = manifest_.imgsz_h;
        d.d[3] = manifest_.imgsz_w;
        return d;
    }

    static sample::HostTensor to_host_tensor(const Binding& b, const nvinfer1::Dims& shape) {
        sample::HostTensor t;
        t.shape.assign(shape.d, shape.d + shape.nbDims);
        const size_t n = static_cast<size_t>(volume(shape));
        switch (b.type) {
            case nvinfer1::DataType::kFLOAT:
                t.f.assign(static_cast<const float*>(b.host), static_cast<const float*>(b.host) + n);
                break;
            case nvinfer1::DataType::kHALF:
                for (size_t i = 0; i < n; ++i) t.f.push_back(half_to_float(static_cast<const uint16_t*>(b.host)[i]));
                break;
            case nvinfer1::DataType::kINT32:
                t.i.assign(static_cast<const int32_t*>(b.host), static_cast<const int32_t*>(b.host) + n);
                break;
            case nvinfer1::DataType::kINT64:
                for (size_t i = 0; i < n; ++i) t.i.push_back(static_cast<int32_t>(static_cast<const int64_t*>(b.host)[i]));
                break;
            default:
                throw Error("output '" + b.name + "' has an unsupported data type");
        }
        return t;
    }

    const yoloworld::Manifest& manifest_;
    Logger logger_;
    // destroyed in reverse order: context, engine, runtime (TensorRT 10 objects are deleted, no destroy())
    std::unique_ptr<nvinfer1::IRuntime> runtime_;
    std::unique_ptr<nvinfer1::ICudaEngine> engine_;
    std::unique_ptr<nvinfer1::IExecutionContext> context_;
    cudaStream_t stream_ = nullptr;
    std::vector<Binding> bindings_;
    size_t input_ = 0;
    int64_t min_batch_ = 1, max_batch_ = 1;
};

int run(int argc, char** argv) {
    const sample::Options opt = sample::parse_args(argc, argv, "model.engine");
    const yoloworld::Manifest m = yoloworld::read_manifest(opt.model);
    if (m.imgsz_h != m.imgsz_w) throw Error("only square inputs are supported, manifest imgsz is not square");
    const auto params = sample::postprocess_params(opt, m);
    const auto norm = sample::normalise_params(m);
    const std::vector<std::string> files = sample::list_images(opt.source);
    TrtDetector det(opt.model, m);
    // a chunk holds up to --batch images; it is padded up to the profile's minimum batch if needed
    const int batch = std::max(1, std::min(opt.batch, det.max_batch()));
    const size_t size = static_cast<size_t>(m.imgsz_h), item = 3 * size * size;
    std::cerr << "engine " << opt.model << ": output_form " << m.output_form << ", imgsz " << size << ", profile batch "
              << det.min_batch() << ".." << det.max_batch() << ", " << files.size() << " image(s), batch " << batch << "\n";

    sample::Reporter report(m.class_names, opt.out_dir);
    double infer_ms = 0;
    for (size_t start = 0; start < files.size(); start += batch) {
        const size_t n = std::min(files.size() - start, static_cast<size_t>(batch));
        const size_t run_n = std::max(n, static_cast<size_t>(det.min_batch()));
        std::vector<cv::Mat> imgs;
        std::vector<yoloworld::LetterboxInfo> infos;
        std::vector<float> input(run_n * item, 0.0f);  // padding items stay zero and are ignored
        for (size_t b = 0; b < n; ++b) {
            imgs.push_back(yoloworld::read_image(files[start + b]));
            infos.push_back(yoloworld::letterbox_into(imgs.back(), static_cast<int>(size), norm, input.data() + b * item));
        }
        const auto t0 = std::chrono::steady_clock::now();
        const auto outs = det.infer(input, static_cast<int64_t>(run_n));
        infer_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        for (size_t b = 0; b < n; ++b)
            report.add(files[start + b], imgs[b], sample::detections_for(outs, b, m, infos[b], params));
    }
    std::cerr << "inference (H2D + enqueueV3 + D2H): " << infer_ms / files.size() << " ms per image\n";
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
    }
    return 2;
}
