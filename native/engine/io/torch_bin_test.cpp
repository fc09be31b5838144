// PyTorch zip (.bin / .pt) tests: archives and pickles built byte by byte, as torch.save writes them.
#include <cstring>

#include "../../test/test.h"
#include "io_internal.h"
#include "io_test_util.h"

using namespace xpsr;
using namespace xpsr_io_test;

namespace {

const std::vector<float> kW = {1, 2, 3, 4, 5, 6};

// Storage "1": 6 halves; the tensor "conv.bias" is elements [2, 6) of it.
std::vector<uint16_t> half_storage() {
  std::vector<uint16_t> h;
  for (float v : {9.f, 9.f, 0.5f, -1.f, 2.f, 65504.f}) h.push_back(f32_to_f16(v));
  return h;
}

// torch.save(OrderedDict(conv.weight=f32[2,3], conv.bias=f16[4] at storage offset 2)) with the
// `_metadata` attribute that state_dict() sets (pickled as BUILD state), protocol 2.
Bytes state_dict_pickle() {
  PickleWriter p;
  p.proto(2).global("collections", "OrderedDict").binput(0).op(')').op('R').binput(1);
  p.mark();
  p.unicode("conv.weight").tensor("FloatStorage", "0", 6, 0, {2, 3}, {3, 1});
  p.unicode("conv.bias").tensor("HalfStorage", "1", 6, 2, {4}, {1});
  p.op('u');
  // BUILD state: {'_metadata': OrderedDict({'': {'version': 1}, 'conv': {'version': 1}})}
  p.op('}').unicode("_metadata").binget(0).op(')').op('R').mark();
  p.unicode("").op('}').unicode("version").integer(1).op('s');
  p.unicode("conv").op('}').unicode("version").integer(1).op('s');
  p.op('u').op('s').op('b').stop();
  return p.b;
}

Bytes archive(const Bytes& pkl, const std::string& folder = "archive", uint16_t method = 0, bool with_byteorder = true,
              const char* byteorder = "little", bool zip64 = false) {
  ZipWriter z;
  z.add(folder + "/data.pkl", pkl, method);
  if (with_byteorder) z.add(folder + "/byteorder", Bytes(byteorder, byteorder + std::strlen(byteorder)));
  z.add(folder + "/data/0", as_bytes(kW), method);
  z.add(folder + "/data/1", as_bytes(half_storage()), method);
  z.add(folder + "/version", Bytes{'3', '\n'});
  z.add(folder + "/.data/serialization_id", Bytes{'1', '2'});
  return z.finish(zip64);
}

void check_good(const TensorFile& f) {
  CHECK((f.names() == std::vector<std::string>{"conv.weight", "conv.bias"}));
  const TensorView* w = f.find("conv.weight");
  CHECK(w && w->dtype == DType::F32 && (w->shape == std::vector<int64_t>{2, 3}) && w->nbytes == 24);
  CHECK(to_f32(*w) == kW);
  const TensorView* b = f.find("conv.bias");
  CHECK(b && b->dtype == DType::F16 && (b->shape == std::vector<int64_t>{4}) && b->nbytes == 8);
  CHECK((to_f32(*b) == std::vector<float>{0.5f, -1.f, 2.f, 65504.f}));
  CHECK(f.metadata().empty());
}

// An archive whose pickle is `pkl` and whose storages are those of `archive()`.
std::string write_bin(TempDir& tmp, const std::string& name, const Bytes& pkl) { return tmp.write(name, archive(pkl)); }

// The pickle of a dict {"w": tensor} with a custom tensor record.
Bytes one_tensor_pickle(const std::string& storage_type, const std::string& key, int64_t numel, int64_t offset,
                        const std::vector<int64_t>& size, const std::vector<int64_t>& stride) {
  PickleWriter p;
  p.proto(2).op('}').unicode("w").tensor(storage_type, key, numel, offset, size, stride).op('s').stop();
  return p.b;
}

}  // namespace

TEST(torch_bin_state_dict_loads) {
  TempDir tmp;
  std::string p = tmp.write("pytorch_model.bin", archive(state_dict_pickle()));
  auto f = TensorFile::open(p);
  check_good(*f);
  // Data points into the map, 64-byte aligned as torch writes it.
  CHECK(((uintptr_t)f->find("conv.weight")->data) % 64 == 0);
  // Any top folder name; byteorder optional.
  check_good(*TensorFile::open(tmp.write("model.pt", archive(state_dict_pickle(), "my_model_v2", 0, false))));
  // zip64 records and extra fields.
  Bytes z64 = archive(state_dict_pickle(), "archive", 0, true, "little", true);
  check_good(*TensorFile::open(tmp.write("z64.bin", z64)));
  Bytes z64bad = z64;
  z64bad[z64bad.size() - 22 - 20 + 8] ^= 0x40;  // locator points elsewhere
  CHECK_THROWS_WITH(TensorFile::open(tmp.write("z64bad.bin", z64bad)), "zip64 end-of-central-directory");
}

TEST(torch_bin_protocol4_opcodes_and_wrappers) {
  // Protocol 4 style: FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, BINGET; a {"state_dict": ...}
  // checkpoint wrapper with an epoch entry; a tensor through _rebuild_parameter; LONG1 ints.
  PickleWriter q;
  q.proto(4).op(0x95);
  put64(q.b, 0);
  q.op('}').memoize();  // memo 0: outer dict
  q.mark().short_unicode("epoch").integer(7);
  q.short_unicode("state_dict").op('}').memoize();  // memo 1: inner dict
  q.mark();
  q.short_unicode("conv.weight");
  q.stack_global("torch._utils", "_rebuild_parameter").memoize();  // memo 2
  q.stack_global("torch._utils", "_rebuild_tensor_v2").memoize();  // memo 3
  q.mark();                                                        // args of _rebuild_tensor_v2
  q.mark().short_unicode("storage").stack_global("torch", "FloatStorage").short_unicode("0").short_unicode("cuda:0");
  q.op(0x8a).op(1).op(6).op('t').op('Q');  // numel as LONG1 6
  q.integer(0).int_tuple({2, 3}).int_tuple({3, 1}).op(0x88).stack_global("collections", "OrderedDict").op(')').op('R');
  q.op('t').op('R');                    // 6 args -> tensor
  q.op(0x88).op(')').op(0x87).op('R');  // _rebuild_parameter(tensor, True, ())
  q.short_unicode("conv.bias");
  q.binget(3).mark();  // _rebuild_tensor_v2 again, from the memo
  q.mark()
      .short_unicode("storage")
      .global("torch", "HalfStorage")
      .short_unicode("1")
      .short_unicode("cpu")
      .integer(6)
      .op('t')
      .op('Q');
  q.integer(2).int_tuple({4}).int_tuple({1}).op(0x89).op('}').op('N').op('t').op('R');  // 7 args: metadata None
  q.op('u');                                                                            // inner SETITEMS
  q.op('u');  // outer SETITEMS (epoch, state_dict)
  q.stop();
  TempDir tmp;
  auto f = TensorFile::open(write_bin(tmp, "ckpt.pt", q.b));
  check_good(*f);
}

TEST(torch_bin_refuses_dangerous_globals) {
  TempDir tmp;
  PickleWriter a;
  a.proto(2).global("os", "system").unicode("echo pwned").op(0x85).op('R').stop();
  std::string pa = write_bin(tmp, "evil.bin", a.b);
  CHECK_THROWS_WITH(TensorFile::open(pa),
                    pa + ": pickle global 'os.system' is not allowed in a state dict; refusing to load");
  PickleWriter b;
  b.proto(4).stack_global("builtins", "eval").short_unicode("1+1").op(0x85).op('R').stop();
  CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "evil2.bin", b.b)), "pickle global 'builtins.eval' is not allowed");
  PickleWriter c;
  c.proto(2)
      .op('}')
      .unicode("w")
      .global("torch.storage", "_load_from_bytes")
      .op('C')
      .op(1)
      .op('x')
      .op(0x85)
      .op('R')
      .op('s')
      .stop();
  CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "evil3.bin", c.b)),
                    "'torch.storage._load_from_bytes' is not allowed");
  PickleWriter d;  // hidden inside an otherwise valid state dict, after the tensors
  d.b = state_dict_pickle();
  d.b.pop_back();  // drop STOP
  d.op('0').global("subprocess", "Popen").stop();
  CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "evil4.bin", d.b)), "'subprocess.Popen' is not allowed");
  PickleWriter e;
  e.proto(2).global("numpy.core.multiarray", "_reconstruct").stop();
  try {
    TensorFile::open(write_bin(tmp, "evil5.bin", e.b));
    CHECK(false);
  } catch (const Error& err) {
    CHECK(err.code() == ErrorCode::WeightsInvalid);
  }
  // Unsupported opcodes (INST, OBJ, NEWOBJ, EXT1) are refused too.
  for (uint8_t op : {(uint8_t)'i', (uint8_t)'o', (uint8_t)0x81, (uint8_t)0x82}) {
    PickleWriter g;
    g.proto(2).op('}').op(op).stop();
    CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "op.bin", g.b)), "is not supported in a state dict");
  }
}

TEST(torch_bin_rejects_non_state_dicts) {
  TempDir tmp;
  PickleWriter l;
  l.proto(2).op(']').unicode("a").op('a').stop();
  std::string p = write_bin(tmp, "list.bin", l.b);
  CHECK_THROWS_WITH(TensorFile::open(p), p + ": pickle holds a list, not a state dict");
  PickleWriter i;
  i.proto(2).integer(5).stop();
  CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "int.bin", i.b)), "pickle holds an int, not a state dict");
  PickleWriter n;  // nested containers inside the state dict
  n.proto(2).op('}').unicode("opt").op(']').op('s').stop();
  CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "nested.bin", n.b)),
                    "state dict entry 'opt' is a list, not a tensor");
  PickleWriter k;  // non-string key
  k.proto(2).op('}').integer(3).op('N').op('s').stop();
  CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "key.bin", k.b)), "state dict key is an int");
  // Scalars are skipped; an empty dict is an empty state dict.
  PickleWriter s;
  s.proto(2).op('}').unicode("step").integer(3).op('s').stop();
  CHECK(TensorFile::open(write_bin(tmp, "scalars.bin", s.b))->names().empty());
}

TEST(torch_bin_rejects_bad_tensors) {
  TempDir tmp;
  CHECK_THROWS_WITH(
      TensorFile::open(write_bin(tmp, "nc.bin", one_tensor_pickle("FloatStorage", "0", 6, 0, {3, 2}, {1, 3}))),
      "tensor 'w': is not contiguous (size [3, 2], stride [1, 3])");
  // Size-1 dims may have any stride; offsets inside the storage are fine.
  auto ok =
      TensorFile::open(write_bin(tmp, "ok.bin", one_tensor_pickle("FloatStorage", "0", 6, 1, {1, 5, 1}, {99, 1, 7})));
  CHECK((to_f32(*ok->find("w")) == std::vector<float>{2, 3, 4, 5, 6}));
  CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "oob.bin", one_tensor_pickle("FloatStorage", "0", 6, 2, {5}, {1}))),
                    "elements [2, +5) lie outside storage 'archive/data/0' of 6 elements");
  CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "big.bin", one_tensor_pickle("FloatStorage", "0", 7, 0, {7}, {1}))),
                    "storage 'archive/data/0' holds 24 bytes but the pickle says 7 F32 elements");
  CHECK_THROWS_WITH(
      TensorFile::open(write_bin(tmp, "miss.bin", one_tensor_pickle("FloatStorage", "9", 6, 0, {6}, {1}))),
      "storage 'archive/data/9' is missing from the archive");
  CHECK_THROWS_WITH(
      TensorFile::open(write_bin(tmp, "neg.bin", one_tensor_pickle("FloatStorage", "0", 6, 0, {-1, 2}, {2, 1}))),
      "negative dimension");
  CHECK_THROWS_WITH(
      TensorFile::open(write_bin(tmp, "negoff.bin", one_tensor_pickle("FloatStorage", "0", 6, -1, {2}, {1}))),
      "negative storage offset");
  CHECK_THROWS_WITH(
      TensorFile::open(write_bin(tmp, "huge.bin",
                                 one_tensor_pickle("FloatStorage", "0", 6, 0, {1LL << 40, 1LL << 40}, {1LL << 40, 1}))),
      "overflows");
  CHECK_THROWS_WITH(
      TensorFile::open(
          write_bin(tmp, "huge2.bin", one_tensor_pickle("FloatStorage", "0", 6, 0, {3, 1LL << 62}, {1LL << 62, 1}))),
      "lie outside storage");
  CHECK_THROWS_WITH(
      TensorFile::open(write_bin(tmp, "rank.bin", one_tensor_pickle("FloatStorage", "0", 6, 0, {2, 3}, {3}))),
      "differ in length");
  CHECK_THROWS_WITH(
      TensorFile::open(write_bin(tmp, "st.bin", one_tensor_pickle("UntypedStorage", "0", 6, 0, {6}, {1}))),
      "'torch.UntypedStorage' is not allowed");
  // Integer / bool storages map to their dtypes.
  auto u = TensorFile::open(write_bin(tmp, "u8.bin", one_tensor_pickle("ByteStorage", "0", 24, 0, {24}, {1})));
  CHECK(u->find("w")->dtype == DType::U8 && u->find("w")->nbytes == 24);
  auto l = TensorFile::open(write_bin(tmp, "i64.bin", one_tensor_pickle("LongStorage", "0", 3, 0, {3}, {1})));
  CHECK(l->find("w")->dtype == DType::I64 && to_i64(*l->find("w")).size() == 3);
}

TEST(torch_bin_rejects_broken_pickles) {
  TempDir tmp;
  Bytes good = state_dict_pickle();
  // Truncated (no STOP) at several points.
  for (size_t cut : {(size_t)1, (size_t)2, (size_t)10, good.size() / 2, good.size() - 1})
    CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "cut.bin", Bytes(good.begin(), good.begin() + cut))), "pickle");
  CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "cut.bin", Bytes(good.begin(), good.end() - 1))), "without a STOP");
  PickleWriter m;  // memo key never stored
  m.proto(2).binget(7).stop();
  CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "memo.bin", m.b)), "memo key 7 was never stored");
  PickleWriter e;  // pop from empty stack
  e.proto(2).op('s').stop();
  CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "empty.bin", e.b)), "empty stack");
  PickleWriter pr;
  pr.proto(9).stop();
  CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "proto.bin", pr.b)), "pickle protocol 9 is not supported");
  PickleWriter big;  // a string length beyond the data
  big.proto(2).op('X');
  put32(big.b, 0xFFFFFFF0u);
  CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "str.bin", big.b)), "over the");
  PickleWriter marks;  // MARK bomb
  marks.proto(2);
  for (int i = 0; i < 10000; ++i) marks.mark();
  CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "marks.bin", marks.b)), "nested MARKs");
  PickleWriter cyc;  // a list containing itself: no crash, no leak
  cyc.proto(2).op(']').binput(0).binget(0).op('a').op('0').op('}').unicode("x").binget(0).op('s').stop();
  CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "cyc.bin", cyc.b)), "is a list, not a tensor");
  PickleWriter od;  // OrderedDict called with arguments
  od.proto(2).global("collections", "OrderedDict").op(']').op(0x85).op('R').stop();
  CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "od.bin", od.b)), "OrderedDict called with arguments");
  PickleWriter call;  // calling a storage class
  call.proto(2).global("torch", "FloatStorage").op(')').op('R').stop();
  CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "call.bin", call.b)), "cannot be called");
  PickleWriter pid;  // malformed persistent id
  pid.proto(2).unicode("storage").op(0x85).op('Q').stop();
  CHECK_THROWS_WITH(TensorFile::open(write_bin(tmp, "pid.bin", pid.b)), "persistent id is not a");
}

TEST(torch_bin_zip_errors) {
  TempDir tmp;
  Bytes good = archive(state_dict_pickle());
  // Deflate entries: clear Unsupported error.
  std::string d = tmp.write("deflate.bin", archive(state_dict_pickle(), "archive", 8));
  CHECK_THROWS_WITH(TensorFile::open(d),
                    d + ": zip entry 'archive/data.pkl' is compressed (deflate, method 8); only stored");
  try {
    TensorFile::open(d);
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::Unsupported);
  }
  // Truncated zips: the end-of-central-directory record is gone, or entries run past the end.
  for (size_t cut : {(size_t)30, good.size() / 2, good.size() - 1, good.size() - 23})
    CHECK_THROWS_WITH(TensorFile::open(tmp.write("trunc.bin", Bytes(good.begin(), good.begin() + cut))), "trunc.bin: ");
  CHECK_THROWS_WITH(TensorFile::open(tmp.write("trunc2.bin", Bytes(good.begin(), good.begin() + good.size() / 2))),
                    "no end-of-central-directory record");
  // Corrupt pickle bytes: CRC mismatch.
  Bytes crc = good;
  crc[64 + 5] ^= 0xFF;  // first entry's data starts at offset 64 (aligned)
  CHECK_THROWS_WITH(TensorFile::open(tmp.write("crc.bin", crc)), "zip entry 'archive/data.pkl' fails its CRC-32 check");
  // Big-endian archive.
  CHECK_THROWS_WITH(TensorFile::open(tmp.write("be.bin", archive(state_dict_pickle(), "archive", 0, true, "big"))),
                    "big-endian PyTorch archives are not supported");
  // No data.pkl / two data.pkl.
  ZipWriter z;
  z.add("archive/other.pkl", Bytes{'.'});
  CHECK_THROWS_WITH(TensorFile::open(tmp.write("nopkl.bin", z.finish())), "has no '<folder>/data.pkl'");
  ZipWriter z2;
  z2.add("a/data.pkl", Bytes{'.'});
  z2.add("b/data.pkl", Bytes{'.'});
  CHECK_THROWS_WITH(TensorFile::open(tmp.write("twopkl.bin", z2.finish())), "has two pickles");
  ZipWriter z3;
  z3.add("archive/data.pkl", state_dict_pickle());
  z3.add("archive/data.pkl", state_dict_pickle());
  CHECK_THROWS_WITH(TensorFile::open(tmp.write("dupe.bin", z3.finish())), "two entries named 'archive/data.pkl'");
  // Central directory pointing outside the file.
  Bytes cd = good;
  size_t eocd = cd.size() - 22;
  cd[eocd + 16] = 0xFF;
  cd[eocd + 17] = 0xFF;
  cd[eocd + 18] = 0xFF;
  cd[eocd + 19] = 0x7F;
  CHECK_THROWS_WITH(TensorFile::open(tmp.write("cd.bin", cd)), "central directory");
  // Encrypted flag.
  Bytes enc = good;
  size_t cd_off = enc[eocd + 16] | enc[eocd + 17] << 8 | enc[eocd + 18] << 16 | (size_t)enc[eocd + 19] << 24;
  enc[cd_off + 8] |= 1;
  CHECK_THROWS_WITH(TensorFile::open(tmp.write("enc.bin", enc)), "is encrypted");
  // Empty zip.
  CHECK_THROWS_WITH(TensorFile::open(tmp.write("empty.zip", ZipWriter().finish())), "has no '<folder>/data.pkl'");
}
