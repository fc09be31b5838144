// xpsr_cuda_resources: the build-time resource report of the CUDA kernels. Reads the ptxas -v lines that
// cmake/nvcc_capture.cmake saved next to each object of xpsr_cuda and writes one JSON file
// (build/cuda-resources.json) with, per kernel instantiation and architecture: registers per thread,
// spill stores/loads, stack frame, static and dynamic shared memory, threads per CTA and, from the
// tuning.h occupancy model, CTAs per SM on the architectures that run that code. `xpsr doctor --verbose`
// shows it (lib/cuda-resources.ts); the CPU test cuda_policy_build_resources checks it against tuning.h.
//   xpsr_cuda_resources OUT.json "nvcc 13.0.88" a.cu.o b.cu.o ...   (reads a.cu.o.ptxas.txt, ...)
// Plain C++ (no CUDA): built and run on the build machine.
#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "../tuning.h"

using namespace xpsr::cuda;

namespace {

struct Kernel {
  std::string mangled, name, arch, file;
  int regs = -1, barriers = 0, stack = 0, spill_st = 0, spill_ld = 0, static_smem = 0;
  // from the template arguments (known kernels only)
  int threads = 0, dynamic_smem = -1;
  std::string family;  // gemm, attention, group_norm, layer_norm, elementwise, other
  bool hot = false;
};

std::string demangle(const std::string& m) {
  int status = 0;
  char* d = abi::__cxa_demangle(m.c_str(), nullptr, nullptr, &status);
  if (status != 0 || !d) return m;
  std::string s(d);
  std::free(d);
  return s;
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if ((unsigned char)c < 0x20) continue;
    o += c;
  }
  return o;
}

// "xpsr::cuda::gemm_kernel<128, 128, 2, 2, (xpsr::cuda::AMode)0>(...)" -> template ints
std::vector<int> template_ints(const std::string& name) {
  std::vector<int> v;
  const size_t lt = name.find('<'), gt = name.find(">(");
  if (lt == std::string::npos || gt == std::string::npos || gt < lt) return v;
  std::string args = name.substr(lt + 1, gt - lt - 1);
  std::stringstream ss(args);
  std::string a;
  while (std::getline(ss, a, ',')) {
    const size_t p = a.find_last_of(")");  // "(xpsr::cuda::AMode)0" -> "0"
    std::string num = p == std::string::npos ? a : a.substr(p + 1);
    while (!num.empty() && num[0] == ' ') num.erase(0, 1);
    if (num == "true") v.push_back(1);
    else if (num == "false") v.push_back(0);
    else v.push_back(std::atoi(num.c_str()));
  }
  return v;
}

void classify(Kernel& k) {
  const std::string& n = k.name;
  const std::vector<int> t = template_ints(n);
  if (n.find("gemm_kernel<") != std::string::npos && t.size() >= 5) {
    k.family = "gemm";
    k.hot = true;
    k.threads = t[2] * t[3] * 32;
    k.dynamic_smem = (t[0] + t[1]) * kGemmBK * 2 * kGemmStages;
  } else if (n.find("attention_fa_kernel<") != std::string::npos && t.size() >= 5) {
    k.family = "attention";
    k.hot = true;
    const AttnTile at{t[1], t[2], t[3], t[4] != 0};
    k.threads = at.warps * 32;
    k.dynamic_smem = attn_smem_rows(at) * attn_row_chunks(t[0]) * 16;
  } else if (n.find("attention_generic_kernel") != std::string::npos) {
    k.family = "attention";
    k.threads = 128;
  } else if (n.find("::gn_") != std::string::npos) {
    k.family = "group_norm";
    k.hot = true;
    k.threads = 256;
    k.dynamic_smem = 0;
  } else if (n.find("::ln_") != std::string::npos) {
    k.family = "layer_norm";
    k.hot = true;
    k.threads = 256;
    k.dynamic_smem = 0;
  } else if (n.find("splitk_reduce") != std::string::npos) {
    k.family = "gemm";
    k.hot = true;
    k.threads = 256;
    k.dynamic_smem = 0;
  } else if (n.find("geglu") != std::string::npos || n.find("axpby") != std::string::npos ||
             n.find("unary") != std::string::npos || n.find("channel_add") != std::string::npos) {
    k.family = "elementwise";
    k.hot = true;
    k.threads = 256;
    k.dynamic_smem = 0;
  } else {
    k.family = "other";
  }
}

// CTAs per SM on each architecture that runs this code: sm_80 SASS also stands for sm_86/sm_89 (they run
// the compute_80 PTX, whose register count is close to sm_80's).
std::vector<std::pair<std::string, int>> occupancy(const Kernel& k) {
  std::vector<std::pair<std::string, int>> out;
  if (k.threads <= 0 || k.dynamic_smem < 0 || k.regs < 0) return out;
  const KernelResources r{k.threads, k.regs, k.dynamic_smem + k.static_smem};
  if (k.arch == "sm_80") {
    for (int cc : {80, 86, 89}) out.push_back({"sm_" + std::to_string(cc), ctas_per_sm(gpu_model_for(cc, 0), r)});
  } else {
    const int cc = std::atoi(k.arch.c_str() + 3);
    out.push_back({k.arch, ctas_per_sm(gpu_model_for(cc, 0), r)});
  }
  return out;
}

void parse_file(const std::string& path, std::vector<Kernel>& out) {
  std::ifstream in(path);
  if (!in) return;
  static const std::regex entry(R"(Compiling entry function '([^']+)' for '(sm_[0-9a-z]+)')");
  static const std::regex props(
      R"(([0-9]+) bytes stack frame, ([0-9]+) bytes spill stores, ([0-9]+) bytes spill loads)");
  static const std::regex used(R"(Used ([0-9]+) registers)");
  static const std::regex barriers(R"(used ([0-9]+) barriers)");
  static const std::regex smem(R"(([0-9]+) bytes smem)");
  std::string file = path;
  const size_t slash = file.find_last_of('/');
  if (slash != std::string::npos) file = file.substr(slash + 1);
  const size_t dot = file.find(".o.ptxas.txt");
  if (dot != std::string::npos) file = file.substr(0, dot);
  std::string line;
  Kernel cur;
  bool open = false, in_props = false;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, entry)) {
      cur = Kernel{};
      cur.mangled = m[1];
      cur.arch = m[2];
      cur.file = file;
      open = true;
      in_props = false;
    } else if (open && line.find("Function properties for " + cur.mangled) != std::string::npos) {
      in_props = true;
    } else if (open && in_props && std::regex_search(line, m, props)) {
      cur.stack = std::atoi(m[1].str().c_str());
      cur.spill_st = std::atoi(m[2].str().c_str());
      cur.spill_ld = std::atoi(m[3].str().c_str());
      in_props = false;
    } else if (open && std::regex_search(line, m, used)) {
      cur.regs = std::atoi(m[1].str().c_str());
      if (std::regex_search(line, m, barriers)) cur.barriers = std::atoi(m[1].str().c_str());
      if (std::regex_search(line, m, smem)) cur.static_smem = std::atoi(m[1].str().c_str());
      cur.name = demangle(cur.mangled);
      classify(cur);
      out.push_back(cur);
      open = false;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: xpsr_cuda_resources OUT.json COMPILER [file.ptxas.txt...]\n");
    return 2;
  }
  std::vector<Kernel> ks;
  int files_read = 0;
  for (int i = 3; i < argc; ++i) {
    // an object file stands for its ptxas log (objects of host-only sources have none)
    std::string path = argv[i];
    const std::string suffix = ".ptxas.txt";
    if (path.size() < suffix.size() || path.compare(path.size() - suffix.size(), suffix.size(), suffix) != 0)
      path += suffix;
    std::ifstream probe(path);
    if (!probe) continue;
    ++files_read;
    parse_file(path, ks);
  }
  std::map<std::string, int> archs;
  int spills = 0, hot_spills = 0, max_regs = 0;
  for (const Kernel& k : ks) {
    archs[k.arch]++;
    max_regs = std::max(max_regs, k.regs);
    if (k.spill_st + k.spill_ld > 0) {
      ++spills;
      if (k.hot) ++hot_spills;
    }
  }
  std::ostringstream o;
  o << "{\n  \"generated_by\": \"xpsr_cuda_resources from ptxas -v (native/cuda/tools/cuda_resources.cpp)\",\n";
  o << "  \"compiler\": \"" << json_escape(argv[2]) << "\",\n  \"files\": " << files_read
    << ",\n  \"architectures\": [";
  bool first = true;
  for (auto& a : archs) {
    o << (first ? "" : ", ") << "\"" << a.first << "\"";
    first = false;
  }
  o << "],\n  \"summary\": {\"kernels\": " << ks.size() << ", \"max_registers\": " << max_regs
    << ", \"with_spills\": " << spills << ", \"hot_with_spills\": " << hot_spills << "},\n  \"kernels\": [";
  for (size_t i = 0; i < ks.size(); ++i) {
    const Kernel& k = ks[i];
    o << (i ? "," : "") << "\n    {\"name\": \"" << json_escape(k.name) << "\", \"arch\": \"" << k.arch
      << "\", \"file\": \"" << json_escape(k.file) << "\", \"family\": \"" << k.family
      << "\", \"hot\": " << (k.hot ? "true" : "false") << ", \"registers\": " << k.regs
      << ", \"spill_stores\": " << k.spill_st << ", \"spill_loads\": " << k.spill_ld << ", \"stack_frame\": " << k.stack
      << ", \"static_smem\": " << k.static_smem << ", \"dynamic_smem\": " << k.dynamic_smem
      << ", \"threads\": " << k.threads << ", \"barriers\": " << k.barriers << ", \"ctas_per_sm\": {";
    const auto occ = occupancy(k);
    for (size_t j = 0; j < occ.size(); ++j) o << (j ? ", " : "") << "\"" << occ[j].first << "\": " << occ[j].second;
    o << "}, \"mangled\": \"" << json_escape(k.mangled) << "\"}";
  }
  o << "\n  ]\n}\n";
  std::ofstream out(argv[1]);
  out << o.str();
  if (!out) {
    std::fprintf(stderr, "xpsr_cuda_resources: cannot write %s\n", argv[1]);
    return 1;
  }
  std::printf(
      "xpsr_cuda_resources: %zu kernel instantiations from %d ptxas logs -> %s (%d with spills, %d of them hot)\n",
      ks.size(), files_read, argv[1], spills, hot_spills);
  return 0;
}
