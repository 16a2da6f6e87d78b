// The dependency-free core: manifest, letterbox geometry + network input, decode, NMS, mapping back.
#pragma once

#include "json.hpp"
#include "manifest.hpp"
#include "nms.hpp"
#include "postprocess.hpp"
#include "preprocess.hpp"
