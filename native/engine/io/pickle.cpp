// See pickle.h. Opcode reference: CPython Lib/pickletools.py (names and argument encodings).
#include "pickle.h"

#include <cstdio>
#include <cstring>
#include <deque>
#include <unordered_map>

#include "../../common/error.h"

namespace xpsr {

namespace {

constexpr size_t kMaxPickle = size_t(256) << 20;
constexpr size_t kMaxNodes = size_t(8) << 20;
constexpr size_t kMaxStack = size_t(1) << 20;
constexpr size_t kMaxMarks = 4096;
constexpr size_t kMaxString = size_t(16) << 20;
constexpr size_t kMaxRank = 32;

enum class K : uint8_t { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, Tensor };

enum class G : uint8_t {
  OrderedDict,
  RebuildTensorV2,
  RebuildTensor,
  RebuildParameter,
  RebuildParameterWithState,
  StorageType
};

struct Node {
  K k = K::None;
  uint8_t tag = 0;  // Global: G; Storage / Global StorageType: DType
  int64_t i = 0;    // Bool / Int value; Storage numel; Tensor: index into tensors
  double f = 0;
  std::string s;             // Str / Bytes; Storage key; Global "module.name"
  std::vector<Node*> items;  // Tuple / List; Dict: key0, value0, key1, value1, ...
};

struct TensorRec {
  Node* storage;
  int64_t offset;
  std::vector<int64_t> shape, stride;
};

const char* kind_name(K k) {
  switch (k) {
    case K::None: return "None";
    case K::Bool: return "a bool";
    case K::Int: return "an int";
    case K::Float: return "a float";
    case K::Str: return "a string";
    case K::Bytes: return "bytes";
    case K::Tuple: return "a tuple";
    case K::List: return "a list";
    case K::Dict: return "a dict";
    case K::Global: return "a class or function";
    case K::Storage: return "a storage";
    case K::Tensor: return "a tensor";
  }
  return "?";
}

struct AllowedGlobal {
  const char* name;
  G g;
  DType dtype;
};
const AllowedGlobal kAllowed[] = {
    {"collections.OrderedDict", G::OrderedDict, DType::F32},
    {"torch._utils._rebuild_tensor_v2", G::RebuildTensorV2, DType::F32},
    {"torch._utils._rebuild_tensor", G::RebuildTensor, DType::F32},
    {"torch._utils._rebuild_parameter", G::RebuildParameter, DType::F32},
    {"torch._utils._rebuild_parameter_with_state", G::RebuildParameterWithState, DType::F32},
    {"torch.FloatStorage", G::StorageType, DType::F32},
    {"torch.HalfStorage", G::StorageType, DType::F16},
    {"torch.BFloat16Storage", G::StorageType, DType::BF16},
    {"torch.DoubleStorage", G::StorageType, DType::F64},
    {"torch.LongStorage", G::StorageType, DType::I64},
    {"torch.IntStorage", G::StorageType, DType::I32},
    {"torch.ShortStorage", G::StorageType, DType::I16},
    {"torch.CharStorage", G::StorageType, DType::I8},
    {"torch.ByteStorage", G::StorageType, DType::U8},
    {"torch.BoolStorage", G::StorageType, DType::Bool},
};

class Vm {
 public:
  Vm(const uint8_t* data, size_t size, const std::string& what)
      : p_(data), begin_(data), end_(data + size), what_(what) {
    if (size > kMaxPickle)
      fail(ErrorCode::WeightsInvalid, what_, ": data.pkl is too large (", size, " bytes, limit ", kMaxPickle, ")");
  }

  Node* run();
  std::vector<PickledTensor> state_dict(Node* root);

 private:
  const uint8_t* p_;
  const uint8_t* begin_;
  const uint8_t* end_;
  const std::string& what_;
  size_t op_at_ = 0;  // offset of the current opcode, for messages
  std::deque<Node> arena_;
  std::vector<Node*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, Node*> memo_;
  std::vector<TensorRec> tensors_;

  template <typename... Args>
  [[noreturn]] void bad(const Args&... parts) const {
    fail(ErrorCode::WeightsInvalid, what_, ": ", parts...);
  }
  template <typename... Args>
  [[noreturn]] void bad_op(const Args&... parts) const {
    fail(ErrorCode::WeightsInvalid, what_, ": pickle opcode at byte ", op_at_, ": ", parts...);
  }

  Node* make(K k) {
    if (arena_.size() >= kMaxNodes) bad("pickle builds more than ", kMaxNodes, " objects; refusing to load");
    arena_.emplace_back();
    arena_.back().k = k;
    return &arena_.back();
  }
  void push(Node* n) {
    if (stack_.size() >= kMaxStack) bad("pickle stack deeper than ", kMaxStack, "; refusing to load");
    stack_.push_back(n);
  }
  Node* pop() {
    if (stack_.size() <= (marks_.empty() ? 0 : marks_.back())) bad_op("pops from an empty stack (or across a MARK)");
    Node* n = stack_.back();
    stack_.pop_back();
    return n;
  }
  Node* top() {
    if (stack_.size() <= (marks_.empty() ? 0 : marks_.back())) bad_op("reads from an empty stack (or across a MARK)");
    return stack_.back();
  }
  // Pops everything above the last MARK (and the mark).
  std::vector<Node*> pop_mark() {
    if (marks_.empty()) bad_op("needs a MARK but there is none");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Node*> items(stack_.begin() + (std::ptrdiff_t)m, stack_.end());
    stack_.resize(m);
    return items;
  }

  void need(size_t n) {
    if ((size_t)(end_ - p_) < n)
      bad("pickle is truncated at byte ", (size_t)(p_ - begin_), " (needs ", n, " more bytes)");
  }
  uint64_t le(size_t n) {
    need(n);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= (uint64_t)p_[i] << (8 * i);
    p_ += n;
    return v;
  }
  std::string bytes(uint64_t n) {
    if (n > kMaxString) bad_op("string of ", n, " bytes is over the ", kMaxString, "-byte limit");
    need((size_t)n);
    std::string s((const char*)p_, (size_t)n);
    p_ += n;
    return s;
  }
  std::string line() {  // GLOBAL arguments: text up to '\n'
    const uint8_t* start = p_;
    while (p_ < end_ && *p_ != '\n') {
      if (p_ - start > 256) bad_op("GLOBAL name longer than 256 bytes");
      ++p_;
    }
    if (p_ >= end_) bad("pickle is truncated inside a GLOBAL name");
    std::string s((const char*)start, (size_t)(p_ - start));
    ++p_;
    return s;
  }

  Node* make_int(int64_t v) {
    Node* n = make(K::Int);
    n->i = v;
    return n;
  }
  Node* make_str(K k, std::string s) {
    Node* n = make(k);
    n->s = std::move(s);
    return n;
  }
  Node* make_tuple(std::vector<Node*> items) {
    Node* n = make(K::Tuple);
    n->items = std::move(items);
    return n;
  }

  Node* global(const std::string& module, const std::string& name) {
    std::string full = module + "." + name;
    for (const auto& a : kAllowed)
      if (full == a.name) {
        Node* n = make(K::Global);
        n->tag = a.g == G::StorageType ? (uint8_t)a.dtype : 0;
        n->i = (int64_t)a.g;
        n->s = full;
        return n;
      }
    // Printable version of the name for the message.
    std::string shown;
    for (char c : full.substr(0, 200)) shown += (c >= 0x20 && c < 0x7F) ? c : '?';
    bad("pickle global '", shown, "' is not allowed in a state dict; refusing to load");
  }

  void memo_put(uint32_t idx, Node* n) {
    if (memo_.size() >= kMaxNodes && !memo_.count(idx)) bad_op("memo holds more than ", kMaxNodes, " entries");
    memo_[idx] = n;
  }
  Node* memo_get(uint32_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) bad_op("memo key ", idx, " was never stored");
    return it->second;
  }

  static bool is_global(const Node* n, G g) { return n->k == K::Global && n->i == (int64_t)g; }

  std::vector<int64_t> int_tuple(const Node* n, const char* what) {
    if (n->k != K::Tuple) bad_op("tensor ", what, " is ", kind_name(n->k), ", expected a tuple of ints");
    if (n->items.size() > kMaxRank)
      bad_op("tensor ", what, " has ", n->items.size(), " dimensions (limit ", kMaxRank, ")");
    std::vector<int64_t> v;
    for (const Node* x : n->items) {
      if (x->k != K::Int) bad_op("tensor ", what, " holds ", kind_name(x->k), ", expected ints");
      v.push_back(x->i);
    }
    return v;
  }

  Node* reduce(Node* fn, Node* args) {
    if (fn->k != K::Global) bad_op("REDUCE calls ", kind_name(fn->k), ", not a class or function");
    if (args->k != K::Tuple) bad_op("REDUCE arguments are ", kind_name(args->k), ", not a tuple");
    const auto& a = args->items;
    switch ((G)fn->i) {
      case G::OrderedDict:
        if (!a.empty()) bad_op("collections.OrderedDict called with arguments (only OrderedDict() is supported)");
        return make(K::Dict);
      case G::RebuildTensorV2:
      case G::RebuildTensor: {
        bool v2 = (G)fn->i == G::RebuildTensorV2;
        if (v2 ? (a.size() < 6 || a.size() > 7) : a.size() != 4) bad_op(fn->s, " called with ", a.size(), " arguments");
        if (a[0]->k != K::Storage) bad_op(fn->s, ": argument 0 is ", kind_name(a[0]->k), ", expected a storage");
        if (a[1]->k != K::Int) bad_op(fn->s, ": storage offset is ", kind_name(a[1]->k), ", expected an int");
        TensorRec t{a[0], a[1]->i, int_tuple(a[2], "size"), int_tuple(a[3], "stride")};
        if (t.shape.size() != t.stride.size())
          bad_op(fn->s, ": size ", shape_str(t.shape), " and stride ", shape_str(t.stride), " differ in length");
        // a[4] requires_grad, a[5] backward hooks (an OrderedDict), a[6] metadata: not needed.
        Node* n = make(K::Tensor);
        n->i = (int64_t)tensors_.size();
        tensors_.push_back(std::move(t));
        return n;
      }
      case G::RebuildParameter:
      case G::RebuildParameterWithState:
        if (a.empty() || a[0]->k != K::Tensor) bad_op(fn->s, ": first argument is not a tensor");
        return a[0];
      case G::StorageType: bad_op(fn->s, " cannot be called in a state dict");
    }
    bad_op("REDUCE of an unknown global");
  }

  Node* persistent_load(Node* pid) {
    // torch.save: ('storage', torch.FloatStorage, '<key>', '<location>', numel)
    if (pid->k != K::Tuple || pid->items.size() != 5 || pid->items[0]->k != K::Str || pid->items[0]->s != "storage")
      bad_op("persistent id is not a ('storage', type, key, location, numel) tuple");
    const Node* type = pid->items[1];
    const Node* key = pid->items[2];
    const Node* numel = pid->items[4];
    if (!is_global(type, G::StorageType)) bad_op("persistent id storage type is not a torch.*Storage class");
    if (key->k != K::Str) bad_op("persistent id storage key is ", kind_name(key->k), ", expected a string");
    if (numel->k != K::Int || numel->i < 0) bad_op("persistent id storage size is not a non-negative int");
    Node* n = make(K::Storage);
    n->tag = type->tag;
    n->s = key->s;
    n->i = numel->i;
    return n;
  }
};

Node* Vm::run() {
  for (;;) {
    if (p_ >= end_) bad("pickle ends without a STOP opcode (truncated data.pkl)");
    op_at_ = (size_t)(p_ - begin_);
    uint8_t op = *p_++;
    switch (op) {
      case 0x80: {  // PROTO
        uint64_t v = le(1);
        if (v > 5) bad_op("pickle protocol ", v, " is not supported");
        break;
      }
      case 0x95: le(8); break;  // FRAME: a size hint only
      case '}': push(make(K::Dict)); break;
      case ']': push(make(K::List)); break;
      case ')': push(make(K::Tuple)); break;
      case '(':  // MARK
        if (marks_.size() >= kMaxMarks) bad_op("more than ", kMaxMarks, " nested MARKs");
        marks_.push_back(stack_.size());
        break;
      case 'X': push(make_str(K::Str, bytes(le(4)))); break;   // BINUNICODE
      case 0x8c: push(make_str(K::Str, bytes(le(1)))); break;  // SHORT_BINUNICODE
      case 0x8d: push(make_str(K::Str, bytes(le(8)))); break;  // BINUNICODE8
      case 'U': push(make_str(K::Str, bytes(le(1)))); break;   // SHORT_BINSTRING
      case 'T': {                                              // BINSTRING (signed length)
        int32_t n = (int32_t)(uint32_t)le(4);
        if (n < 0) bad_op("negative BINSTRING length");
        push(make_str(K::Str, bytes((uint64_t)n)));
        break;
      }
      case 'C': push(make_str(K::Bytes, bytes(le(1)))); break;    // SHORT_BINBYTES
      case 'B': push(make_str(K::Bytes, bytes(le(4)))); break;    // BINBYTES
      case 0x8e: push(make_str(K::Bytes, bytes(le(8)))); break;   // BINBYTES8
      case 'q': memo_put((uint32_t)le(1), top()); break;          // BINPUT
      case 'r': memo_put((uint32_t)le(4), top()); break;          // LONG_BINPUT
      case 0x94: memo_put((uint32_t)memo_.size(), top()); break;  // MEMOIZE
      case 'h': push(memo_get((uint32_t)le(1))); break;           // BINGET
      case 'j': push(memo_get((uint32_t)le(4))); break;           // LONG_BINGET
      case 'J': push(make_int((int32_t)(uint32_t)le(4))); break;  // BININT
      case 'K': push(make_int((int64_t)le(1))); break;            // BININT1
      case 'M': push(make_int((int64_t)le(2))); break;            // BININT2
      case 0x8a:                                                  // LONG1
      case 0x8b: {                                                // LONG4
        uint64_t n = op == 0x8a ? le(1) : le(4);
        if (n > 8) bad_op("integer of ", n, " bytes does not fit in int64");
        uint64_t v = n ? le((size_t)n) : 0;
        if (n && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~(uint64_t)0 << (8 * n);  // sign-extend
        push(make_int((int64_t)v));
        break;
      }
      case 'G': {  // BINFLOAT: big-endian double
        need(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = bits << 8 | p_[i];
        p_ += 8;
        Node* n = make(K::Float);
        std::memcpy(&n->f, &bits, 8);
        push(n);
        break;
      }
      case 'N': push(make(K::None)); break;
      case 0x88:
      case 0x89: {  // NEWTRUE / NEWFALSE
        Node* n = make(K::Bool);
        n->i = op == 0x88;
        push(n);
        break;
      }
      case 't': push(make_tuple(pop_mark())); break;  // TUPLE
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        size_t n = (size_t)(op - 0x84);
        std::vector<Node*> items(n);
        for (size_t i = n; i-- > 0;) items[i] = pop();
        push(make_tuple(std::move(items)));
        break;
      }
      case 'l': {  // LIST
        Node* n = make(K::List);
        n->items = pop_mark();
        push(n);
        break;
      }
      case 'd': {  // DICT
        std::vector<Node*> items = pop_mark();
        if (items.size() % 2) bad_op("DICT with an odd number of items");
        Node* n = make(K::Dict);
        n->items = std::move(items);
        push(n);
        break;
      }
      case 's': {  // SETITEM
        Node* v = pop();
        Node* k = pop();
        Node* d = top();
        if (d->k != K::Dict) bad_op("SETITEM on ", kind_name(d->k), ", not a dict");
        d->items.push_back(k);
        d->items.push_back(v);
        break;
      }
      case 'u': {  // SETITEMS
        std::vector<Node*> items = pop_mark();
        if (items.size() % 2) bad_op("SETITEMS with an odd number of items");
        Node* d = top();
        if (d->k != K::Dict) bad_op("SETITEMS on ", kind_name(d->k), ", not a dict");
        d->items.insert(d->items.end(), items.begin(), items.end());
        break;
      }
      case 'a': {  // APPEND
        Node* v = pop();
        Node* l = top();
        if (l->k != K::List) bad_op("APPEND on ", kind_name(l->k), ", not a list");
        l->items.push_back(v);
        break;
      }
      case 'e': {  // APPENDS
        std::vector<Node*> items = pop_mark();
        Node* l = top();
        if (l->k != K::List) bad_op("APPENDS on ", kind_name(l->k), ", not a list");
        l->items.insert(l->items.end(), items.begin(), items.end());
        break;
      }
      case 'c': {  // GLOBAL
        std::string module = line();
        std::string name = line();
        push(global(module, name));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        Node* name = pop();
        Node* module = pop();
        if (name->k != K::Str || module->k != K::Str) bad_op("STACK_GLOBAL needs two strings");
        push(global(module->s, name->s));
        break;
      }
      case 'R': {  // REDUCE
        Node* args = pop();
        Node* fn = pop();
        push(reduce(fn, args));
        break;
      }
      case 'Q': push(persistent_load(pop())); break;  // BINPERSID
      case 'b': {  // BUILD: only OrderedDict state (e.g. state_dict()._metadata), which is ignored
        pop();
        Node* obj = top();
        if (obj->k != K::Dict) bad_op("BUILD on ", kind_name(obj->k), " (only dict state is supported)");
        break;
      }
      case '0': pop(); break;        // POP
      case '1': pop_mark(); break;   // POP_MARK
      case '2': push(top()); break;  // DUP
      case '.': {                    // STOP
        Node* result = pop();
        return result;
      }
      default: {
        char shown[16];
        if (op >= 0x20 && op < 0x7F) std::snprintf(shown, sizeof shown, " ('%c')", (char)op);
        else shown[0] = 0;
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02X", op);
        bad("pickle opcode ", hex, shown, " at byte ", op_at_, " is not supported in a state dict; refusing to load");
      }
    }
  }
}

std::vector<PickledTensor> Vm::state_dict(Node* root) {
  if (root->k != K::Dict) bad("pickle holds ", kind_name(root->k), ", not a state dict (a dict of tensors)");
  const Node* dict = root;
  bool has_tensor = false;
  for (size_t i = 1; i < root->items.size(); i += 2) has_tensor |= root->items[i]->k == K::Tensor;
  if (!has_tensor) {
    for (const char* wrapper : {"state_dict", "model"}) {
      const Node* inner = nullptr;
      for (size_t i = 0; i + 1 < root->items.size(); i += 2)
        if (root->items[i]->k == K::Str && root->items[i]->s == wrapper) inner = root->items[i + 1];  // last wins
      if (inner && inner->k == K::Dict) {
        dict = inner;
        break;
      }
    }
  }
  std::vector<PickledTensor> out;
  std::unordered_map<std::string, size_t> index;
  for (size_t i = 0; i + 1 < dict->items.size(); i += 2) {
    const Node* k = dict->items[i];
    const Node* v = dict->items[i + 1];
    if (k->k != K::Str) bad("state dict key is ", kind_name(k->k), ", not a string");
    switch (v->k) {
      case K::None:
      case K::Bool:
      case K::Int:
      case K::Float:
      case K::Str:
      case K::Bytes: continue;
      case K::Tensor: break;
      default:
        bad("state dict entry '", k->s, "' is ", kind_name(v->k),
            ", not a tensor (nested containers are not supported)");
    }
    const TensorRec& r = tensors_[(size_t)v->i];
    PickledTensor t;
    t.name = k->s;
    t.dtype = (DType)r.storage->tag;
    t.storage_key = r.storage->s;
    t.storage_numel = (uint64_t)r.storage->i;
    t.storage_offset = r.offset;
    t.shape = r.shape;
    t.stride = r.stride;
    auto it = index.find(t.name);
    if (it != index.end()) out[it->second] = std::move(t);  // Python dict semantics: last value wins
    else {
      index.emplace(t.name, out.size());
      out.push_back(std::move(t));
    }
  }
  return out;
}

}  // namespace

std::vector<PickledTensor> unpickle_state_dict(const uint8_t* data, size_t size, const std::string& what) {
  Vm vm(data, size, what);
  Node* root = vm.run();
  return vm.state_dict(root);
}

}  // namespace xpsr
