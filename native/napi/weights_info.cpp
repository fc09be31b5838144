// N-API functions describing weight files without loading them (lib/weights uses them for `xpsr doctor`
// and to resolve folders): headers only, synchronous (a header is at most 100 MB by the reader's limit,
// a few hundred kB in practice).
//   inspectWeights(path)                        -> { format, tensors, bytes, dtypes, singleFile, foreign,
//                                                    textModelLevel, positionIds, groups: [...] }
//   findWeightFiles(dir, component, variant?)   -> the files the engine would load for that component
#include <napi.h>

#include <cstdio>
#include <new>

#include "engine/io/checkpoint_map.h"
#include "engine/io/tensor_file.h"
#include "engine/sources.h"
#include "engine/weights.h"

using namespace xpsr;

namespace {

Napi::Error coded(Napi::Env env, const Error& e) {
  Napi::Error err = Napi::Error::New(env, e.what());
  err.Set("code", Napi::String::New(env, e.code_name()));
  return err;
}

Napi::Object dtype_counts(Napi::Env env, const std::map<std::string, size_t>& m) {
  Napi::Object o = Napi::Object::New(env);
  for (auto& kv : m) o.Set(kv.first, (double)kv.second);
  return o;
}

Napi::Value InspectWeights(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::Error e = Napi::Error::New(env, "inspectWeights(path: string)");
    e.Set("code", Napi::String::New(env, "ERR_INVALID_ARGUMENT"));
    throw e;
  }
  const std::string path = info[0].As<Napi::String>();
  try {
    std::unique_ptr<TensorFile> f = TensorFile::open(path);
    SdFileLayout lay = inspect_sd_file(*f);
    Napi::Object o = Napi::Object::New(env);
    o.Set("path", path);
    char magic[2] = {0, 0};
    if (std::FILE* fp = std::fopen(path.c_str(), "rb")) {
      if (std::fread(magic, 1, 2, fp) != 2) magic[0] = 0;
      std::fclose(fp);
    }
    o.Set("format", magic[0] == 'P' && magic[1] == 'K' ? "pytorch zip" : "safetensors");  // as TensorFile::open sniffs
    std::map<std::string, size_t> all;
    double bytes = 0, tensors = 0;
    Napi::Array groups = Napi::Array::New(env);
    for (size_t i = 0; i < lay.groups.size(); ++i) {
      const SdFileGroup& g = lay.groups[i];
      Napi::Object go = Napi::Object::New(env);
      go.Set("prefix", g.prefix);
      go.Set("role", g.role);
      go.Set("used", g.used);
      go.Set("tensors", (double)g.tensors);
      go.Set("bytes", (double)g.bytes);
      go.Set("dtypes", dtype_counts(env, g.dtypes));
      groups.Set((uint32_t)i, go);
      for (auto& kv : g.dtypes) all[kv.first] += kv.second;
      bytes += (double)g.bytes, tensors += (double)g.tensors;
    }
    o.Set("tensors", tensors);
    o.Set("bytes", bytes);
    o.Set("dtypes", dtype_counts(env, all));
    o.Set("singleFile", lay.single_file);
    o.Set("foreign", lay.foreign);
    o.Set("textModelLevel", lay.text_model_level);
    o.Set("positionIds", lay.position_ids);
    o.Set("groups", groups);
    return o;
  } catch (const Error& e) {
    throw coded(env, e);
  } catch (const std::bad_alloc&) {
    throw coded(env, Error(ErrorCode::OutOfMemory, "inspectWeights: out of memory reading " + path));
  } catch (const std::exception& e) {
    throw coded(env, Error(ErrorCode::Internal, std::string("inspectWeights: ") + e.what()));
  }
}

Napi::Value FindWeightFiles(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) {
    Napi::Error e = Napi::Error::New(env, "findWeightFiles(dir: string, component: string, variant?: string)");
    e.Set("code", Napi::String::New(env, "ERR_INVALID_ARGUMENT"));
    throw e;
  }
  const std::string dir = info[0].As<Napi::String>(), component = info[1].As<Napi::String>();
  const std::string variant = info.Length() > 2 && info[2].IsString() ? std::string(info[2].As<Napi::String>()) : "";
  try {
    auto files = find_weight_files(dir, weight_file_stems(component), variant);
    Napi::Array a = Napi::Array::New(env, files.size());
    for (size_t i = 0; i < files.size(); ++i) a.Set((uint32_t)i, files[i]);
    return a;
  } catch (const Error& e) {
    throw coded(env, e);
  } catch (const std::bad_alloc&) {
    throw coded(env, Error(ErrorCode::OutOfMemory, "findWeightFiles: out of memory"));
  } catch (const std::exception& e) {  // e.g. a filesystem error listing the folder
    throw coded(env, Error(ErrorCode::Io, std::string("findWeightFiles: ") + e.what()));
  }
}

}  // namespace

// Called from addon.cpp's module init.
void register_weights_info(Napi::Env env, Napi::Object exports) {
  exports.Set("inspectWeights", Napi::Function::New(env, InspectWeights));
  exports.Set("findWeightFiles", Napi::Function::New(env, FindWeightFiles));
}
