// safetensors reader/writer tests: round trip of every dtype, the shared fixtures, hostile files.
#include <sys/stat.h>

#include <cmath>
#include <cstring>

#include "../../test/test.h"
#include "io_internal.h"
#include "io_test_util.h"

using namespace xpsr;
using namespace xpsr_io_test;

namespace {

std::string header_entry(const std::string& name, const std::string& dtype, const std::string& shape, uint64_t b,
                         uint64_t e) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
         std::to_string(b) + "," + std::to_string(e) + "]}";
}

ErrorCode error_code_of(const std::string& path) {
  try {
    TensorFile::open(path);
  } catch (const Error& e) {
    return e.code();
  }
  return ErrorCode::Internal;  // did not throw
}

}  // namespace

TEST(safetensors_round_trip_every_dtype) {
  TempDir tmp;
  std::vector<float> f32 = {1.5f, -2.25f, 3.0f, 0.0f, 1e-3f, -7.0f};
  std::vector<uint16_t> f16, bf16;
  for (float v : f32) {
    f16.push_back(f32_to_f16(v));
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    bf16.push_back((uint16_t)(bits >> 16));
  }
  std::vector<double> f64 = {0.1, -1e10, 3.25};
  std::vector<int64_t> i64 = {INT64_MIN, -1, 0, INT64_MAX};
  std::vector<int32_t> i32 = {INT32_MIN, 7, INT32_MAX};
  std::vector<int16_t> i16 = {-32768, 1, 32767, 5};
  std::vector<int8_t> i8 = {-128, 0, 127};
  std::vector<uint8_t> u8 = {0, 128, 255, 9, 1, 2};
  std::vector<uint8_t> bl = {0, 1, 1};
  std::vector<TensorToWrite> ts = {
      {"u8", DType::U8, {2, 3}, u8},
      {"f32", DType::F32, {2, 3}, as_bytes(f32)},
      {"f16", DType::F16, {6}, as_bytes(f16)},
      {"bf16", DType::BF16, {3, 2}, as_bytes(bf16)},
      {"f64", DType::F64, {3}, as_bytes(f64)},
      {"i64", DType::I64, {4}, as_bytes(i64)},
      {"i32", DType::I32, {3, 1}, as_bytes(i32)},
      {"i16", DType::I16, {2, 2}, as_bytes(i16)},
      {"i8", DType::I8, {3}, as_bytes(i8)},
      {"bool", DType::Bool, {3}, bl},
      {"empty", DType::F32, {0, 4}, {}},
      {"scalar", DType::F32, {}, as_bytes(std::vector<float>{42.0f})},
      {"we\"ird\\name\n", DType::U8, {1}, {7}},
  };
  std::string p = tmp.path("all.safetensors");
  write_safetensors(p, ts, {{"format", "pt"}, {"info", "{\"a\": 1}"}});

  Bytes raw = read_all(p);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | raw[i];
  CHECK((8 + n) % 8 == 0);

  auto f = TensorFile::open(p);
  CHECK(f->path() == p);
  CHECK(f->names().size() == ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    CHECK(f->names()[i] == ts[i].name);  // header order = given order
    const TensorView* v = f->find(ts[i].name);
    CHECK(v && v->dtype == ts[i].dtype && v->shape == ts[i].shape && v->nbytes == ts[i].bytes.size());
    CHECK(v->nbytes == 0 || std::memcmp(v->data, ts[i].bytes.data(), v->nbytes) == 0);
    // Data section laid out by element size: every tensor aligned to its element size in the file.
    CHECK(v->nbytes == 0 || (size_t)(v->data - f->find("f64")->data) % dtype_size(v->dtype) == 0);
  }
  CHECK(f->find("nope") == nullptr);
  CHECK(f->metadata().size() == 2 && f->metadata().at("format") == "pt" && f->metadata().at("info") == "{\"a\": 1}");

  auto vf = to_f32(*f->find("f32"));
  CHECK(vf == f32);
  auto vh = to_f32(*f->find("f16"));
  for (size_t i = 0; i < f32.size(); ++i) CHECK_CLOSE(vh[i], f32[i], 1e-3);
  auto vb = to_f32(*f->find("bf16"));
  for (size_t i = 0; i < f32.size(); ++i) CHECK_CLOSE(vb[i], f32[i], 1e-2 * std::fabs(f32[i]) + 1e-6);
  auto vd = to_f32(*f->find("f64"));
  CHECK(vd[0] == 0.1f && vd[1] == -1e10f && vd[2] == 3.25f);
  CHECK(to_i64(*f->find("i64")) == i64);
  CHECK((to_i64(*f->find("i32")) == std::vector<int64_t>{INT32_MIN, 7, INT32_MAX}));
  CHECK((to_i64(*f->find("i16")) == std::vector<int64_t>{-32768, 1, 32767, 5}));
  CHECK((to_i64(*f->find("i8")) == std::vector<int64_t>{-128, 0, 127}));
  CHECK((to_i64(*f->find("u8")) == std::vector<int64_t>{0, 128, 255, 9, 1, 2}));
  CHECK((to_f32(*f->find("u8")) == std::vector<float>{0, 128, 255, 9, 1, 2}));
  CHECK((to_f32(*f->find("i8")) == std::vector<float>{-128, 0, 127}));
  CHECK(to_f32(*f->find("empty")).empty());
  CHECK(f->find("scalar")->numel() == 1 && to_f32(*f->find("scalar"))[0] == 42.0f);
  CHECK_THROWS_WITH(to_f32(*f->find("bool")), "BOOL");
  CHECK_THROWS_WITH(to_i64(*f->find("f32")), "expected an integer dtype");
}

TEST(safetensors_writer_rejects_bad_input) {
  TempDir tmp;
  std::string p = tmp.path("bad.safetensors");
  CHECK_THROWS_WITH(write_safetensors(p, {{"a", DType::F32, {2}, {1, 2, 3}}}), "needs 8 bytes");
  CHECK_THROWS_WITH(write_safetensors(p, {{"a", DType::U8, {1}, {1}}, {"a", DType::U8, {1}, {1}}}), "duplicate");
  CHECK_THROWS_WITH(write_safetensors(p, {{"__metadata__", DType::U8, {1}, {1}}}), "__metadata__");
  CHECK_THROWS_WITH(write_safetensors(tmp.dir() + "/no/such/dir/x.safetensors", {}), "cannot create");
  // An empty file with no tensors is valid.
  write_safetensors(p, {});
  CHECK(TensorFile::open(p)->names().empty());
}

TEST(safetensors_fixtures) {
  const std::string dir = xpsr_test::fixtures_dir();
  const std::string unet = dir + "/model/unet/diffusion_pytorch_model.safetensors";
  struct stat st;
  if (::stat(unet.c_str(), &st) != 0) SKIP("fixtures not found (set XPSR_FIXTURES): " + unet);
  auto f = TensorFile::open(unet);
  CHECK(f->metadata().count("format") && f->metadata().at("format") == "pt");
  const TensorView* w = f->find("conv_in.weight");
  CHECK(w && w->dtype == DType::F32 && (w->shape == std::vector<int64_t>{16, 4, 3, 3}));
  CHECK(f->names().size() > 100);

  const char* files[] = {"model/unet/diffusion_pytorch_model.safetensors",
                         "model/vae/diffusion_pytorch_model.safetensors",
                         "model/controlnet/diffusion_pytorch_model.safetensors",
                         "model/text_encoder/model.safetensors",
                         "model/unet_lowlevel_variant/diffusion_pytorch_model.safetensors",
                         "unet.safetensors",
                         "vae_decoder.safetensors",
                         "scheduler_ddpm.safetensors",
                         "pipeline_default.safetensors",
                         "colorfix.safetensors"};
  size_t opened = 0, tensors = 0;
  for (const char* rel : files) {
    std::string p = dir + "/" + rel;
    if (::stat(p.c_str(), &st) != 0) continue;
    auto t = TensorFile::open(p);
    ++opened;
    for (const auto& name : t->names()) {
      const TensorView* v = t->find(name);
      CHECK(v != nullptr);
      CHECK_MSG((uint64_t)v->nbytes == (uint64_t)v->numel() * dtype_size(v->dtype), p + ": " + name);
      if (v->dtype == DType::Bool) continue;
      auto x = to_f32(*v);
      CHECK(x.size() == (size_t)v->numel());
      if (dtype_is_float(v->dtype))
        for (float y : x) CHECK_MSG(!std::isnan(y), p + ": NaN in " + name);
      ++tensors;
    }
  }
  CHECK(opened >= 5 && tensors > 500);
}

TEST(safetensors_open_errors_missing_empty_directory_garbage) {
  TempDir tmp;
  std::string missing = tmp.dir() + "/missing.safetensors";
  CHECK_THROWS_WITH(TensorFile::open(missing), "file not found");
  CHECK(error_code_of(missing) == ErrorCode::WeightsMissing);
  CHECK_THROWS_WITH(TensorFile::open(tmp.dir()), "is a directory");
  CHECK(error_code_of(tmp.dir()) == ErrorCode::Io);
  std::string empty = tmp.write("empty.safetensors", Bytes{});
  CHECK_THROWS_WITH(TensorFile::open(empty), "empty.safetensors: file is empty");
  CHECK(error_code_of(empty) == ErrorCode::WeightsInvalid);
  std::string garbage = tmp.write("garbage.bin", std::string("hello world, not weights"));
  CHECK_THROWS_WITH(
      TensorFile::open(garbage),
      "garbage.bin: not a safetensors file or a PyTorch zip archive (first bytes 68 65 6c 6c 6f 20 77 6f)");
  std::string tiny = tmp.write("tiny.bin", std::string("{}"));
  CHECK_THROWS_WITH(TensorFile::open(tiny), "not a safetensors file");
  Bytes legacy = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20};
  CHECK_THROWS_WITH(TensorFile::open(tmp.write("legacy.pt", legacy)), "legacy (PyTorch < 1.6)");
}

TEST(safetensors_hostile_headers) {
  TempDir tmp;
  // A valid reference: a [2,2] F32 tensor and a [3] U8 tensor.
  Bytes data(19, 0);
  std::string good =
      "{" + header_entry("a", "F32", "[2,2]", 0, 16) + "," + header_entry("b", "U8", "[3]", 16, 19) + "}";
  auto file = [&](const std::string& name, const std::string& header, const Bytes& d, uint64_t len = 0) {
    return tmp.write(name, safetensors_bytes(header, d, len));
  };
  CHECK(TensorFile::open(file("good.safetensors", good, data))->names().size() == 2);

  Bytes full = safetensors_bytes(good, data);
  // Truncated: inside the header, and inside the data section.
  CHECK_THROWS_WITH(TensorFile::open(tmp.write("t1.safetensors", Bytes(full.begin(), full.begin() + 20))),
                    "t1.safetensors: safetensors header length");
  CHECK_THROWS_WITH(TensorFile::open(tmp.write("t1.safetensors", Bytes(full.begin(), full.begin() + 20))), "truncated");
  CHECK_THROWS_WITH(TensorFile::open(tmp.write("t2.safetensors", Bytes(full.begin(), full.end() - 2))),
                    "t2.safetensors: tensor 'b': data_offsets [16, 19] lie outside the data section (17 bytes");
  CHECK_THROWS_WITH(TensorFile::open(tmp.write("t3.safetensors", Bytes(full.begin(), full.begin() + 5))),
                    "not a safetensors file");
  // Header length larger than the file / absurd.
  CHECK_THROWS_WITH(TensorFile::open(file("len.safetensors", good, data, full.size())), "exceeds the");
  CHECK_THROWS_WITH(TensorFile::open(file("huge.safetensors", good, data, (uint64_t)1 << 63)),
                    "over the 104857600-byte limit");
  // Not JSON / not an object / trailing garbage.
  CHECK_THROWS_WITH(TensorFile::open(file("nj.safetensors", "{not json}", {})),
                    "nj.safetensors: safetensors header: JSON error at byte 1");
  CHECK_THROWS_WITH(TensorFile::open(file("nj2.safetensors", good + "xx", data)),
                    "unexpected data after the JSON value");
  CHECK_THROWS_WITH(TensorFile::open(file("nj3.safetensors", "{\"a\":1", {})), "JSON error");
  // Trailing spaces are fine (that is how writers pad).
  CHECK(TensorFile::open(file("pad.safetensors", good + "     ", data))->names().size() == 2);
  // Offsets out of range, reversed, negative, wrong arity.
  CHECK_THROWS_WITH(
      TensorFile::open(file("o1.safetensors", "{" + header_entry("a", "F32", "[2,2]", 8, 24) + "}", data)),
      "tensor 'a': data_offsets [8, 24] lie outside the data section (19 bytes");
  CHECK_THROWS_WITH(TensorFile::open(file("o2.safetensors", "{" + header_entry("a", "F32", "[0]", 8, 4) + "}", data)),
                    "end before they begin");
  CHECK_THROWS_WITH(TensorFile::open(file("o3.safetensors",
                                          "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", data)),
                    "not non-negative integers");
  CHECK_THROWS_WITH(
      TensorFile::open(file("o4.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", data)),
      "expected [begin, end]");
  CHECK_THROWS_WITH(TensorFile::open(file("o5.safetensors",
                                          "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0.5,1]}}", data)),
                    "not non-negative integers");
  CHECK_THROWS_WITH(TensorFile::open(file(
                        "o6.safetensors",
                        "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999999]}}", data)),
                    "not non-negative integers");
  // Overlapping ranges (zero-size tensors may sit anywhere).
  CHECK_THROWS_WITH(
      TensorFile::open(file(
          "ov.safetensors",
          "{" + header_entry("a", "F32", "[2,2]", 0, 16) + "," + header_entry("b", "U8", "[3]", 14, 17) + "}", data)),
      "tensor 'b': data_offsets [14, 17] overlap tensor 'a' [0, 16]");
  CHECK_THROWS_WITH(
      TensorFile::open(
          file("ov2.safetensors",
               "{" + header_entry("a", "U8", "[4]", 0, 4) + "," + header_entry("b", "U8", "[4]", 0, 4) + "}", data)),
      "overlap");
  CHECK(TensorFile::open(
            file("zs.safetensors",
                 "{" + header_entry("a", "F32", "[2,2]", 0, 16) + "," + header_entry("z", "F32", "[0,3]", 4, 4) + "}",
                 data))
            ->names()
            .size() == 2);
  // Wrong byte count for dtype x shape: the message states both.
  Bytes d4000(4000, 0);
  CHECK_THROWS_WITH(
      TensorFile::open(
          file("model.safetensors", "{" + header_entry("conv_in.weight", "F32", "[320,4,3,3]", 0, 4000) + "}", d4000)),
      "model.safetensors: tensor 'conv_in.weight': data_offsets [0, 4000] hold 4000 bytes but F32 [320, 4, 3, 3] needs "
      "46080");
  CHECK_THROWS_WITH(
      TensorFile::open(file("bc.safetensors", "{" + header_entry("a", "F16", "[2,2]", 0, 16) + "}", data)),
      "hold 16 bytes but F16 [2, 2] needs 8");
  // Unknown dtype, bad dtype type.
  CHECK_THROWS_WITH(
      TensorFile::open(file("dt.safetensors", "{" + header_entry("a", "F8_E4M3", "[4]", 0, 4) + "}", data)),
      "tensor 'a': unsupported dtype 'F8_E4M3'");
  CHECK_THROWS_WITH(
      TensorFile::open(file("dt2.safetensors", "{\"a\":{\"dtype\":3,\"shape\":[1],\"data_offsets\":[0,1]}}", data)),
      "dtype is 3, expected a string");
  // Duplicate names (JSON duplicate keys).
  CHECK_THROWS_WITH(
      TensorFile::open(
          file("dup.safetensors",
               "{" + header_entry("a", "U8", "[4]", 0, 4) + "," + header_entry("a", "U8", "[4]", 4, 8) + "}", data)),
      "duplicate key 'a'");
  // Negative / fractional / overflowing dims, too many dims.
  CHECK_THROWS_WITH(
      TensorFile::open(file("neg.safetensors", "{" + header_entry("a", "F32", "[-1,4]", 0, 16) + "}", data)),
      "tensor 'a': shape[0] is negative (-1)");
  CHECK_THROWS_WITH(
      TensorFile::open(file("frac.safetensors", "{" + header_entry("a", "F32", "[1.5]", 0, 16) + "}", data)),
      "shape[0] is 1.5");
  CHECK_THROWS_WITH(
      TensorFile::open(
          file("ovf.safetensors", "{" + header_entry("a", "F32", "[4294967296,4294967296]", 0, 16) + "}", data)),
      "too large");
  CHECK_THROWS_WITH(TensorFile::open(file("ovf2.safetensors",
                                          "{" + header_entry("a", "U8", "[4611686018427387904,4]", 0, 16) + "}", data)),
                    "too large");
  CHECK_THROWS_WITH(
      TensorFile::open(file(
          "rank.safetensors",
          "{" + header_entry("a", "U8", "[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]", 0, 1) +
              "}",
          data)),
      "dimensions");
  // Missing fields, entry not an object, metadata problems.
  CHECK_THROWS_WITH(TensorFile::open(file("mf.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", data)),
                    "lacks \"data_offsets\"");
  CHECK_THROWS_WITH(TensorFile::open(file("eo.safetensors", "{\"a\":[1,2]}", data)), "header entry is an array");
  CHECK_THROWS_WITH(TensorFile::open(file("md.safetensors", "{\"__metadata__\":{\"k\":1}}", data)),
                    "__metadata__ value of 'k' is 1, expected a string");
  CHECK_THROWS_WITH(TensorFile::open(file("md2.safetensors", "{\"__metadata__\":\"x\"}", data)),
                    "__metadata__ is not a JSON object");
  CHECK_THROWS_WITH(
      TensorFile::open(file("deep.safetensors", "{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}", data)),
      "nesting deeper than");
  // The code is WeightsInvalid for all of these.
  CHECK(error_code_of(tmp.dir() + "/dup.safetensors") == ErrorCode::WeightsInvalid);
  CHECK(error_code_of(tmp.dir() + "/nj.safetensors") == ErrorCode::WeightsInvalid);
}
