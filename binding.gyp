# Fallback build for machines without CMake: the CPU-only engine addon with node-gyp
# (`npx node-gyp rebuild`; scripts/build-native.mjs uses it automatically when cmake is missing).
# The CUDA backend, the native test runner and the captioner addon need the CMake build.
{
  "variables": { "xpsr_x86%": "<!(node -p \"['x64','ia32'].includes(process.arch) ? 1 : 0\")" },
  "target_defaults": {
    "cflags_cc": ["-std=c++17", "-O2", "-fexceptions", "-Wno-unused-parameter"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
    "include_dirs": ["native"],
    "defines": ["NDEBUG"],
    "conditions": [["xpsr_x86==1", { "defines": ["XPSR_X86=1"] }]]
  },
  "targets": [
    {
      "target_name": "xpsr_simd",
      "type": "static_library",
      "conditions": [["xpsr_x86==1", {
        "sources": ["<!@(node scripts/gyp-sources.mjs avx2)"],
        "cflags_cc": ["-mavx2", "-mfma", "-mf16c"]
      }]]
    },
    {
      "target_name": "xpsr_simd512",
      "type": "static_library",
      "conditions": [["xpsr_x86==1", {
        "sources": ["<!@(node scripts/gyp-sources.mjs avx512)"],
        "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"]
      }]]
    },
    {
      "target_name": "xpsr",
      "sources": ["<!@(node scripts/gyp-sources.mjs core)", "<!@(node scripts/gyp-sources.mjs napi)"],
      "dependencies": ["xpsr_simd", "xpsr_simd512"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "libraries": ["-lpthread"]
    }
  ]
}
