// The prebuilt platform packages and what their release binaries must satisfy. scripts/pack.mjs builds and
// checks them, scripts/test-packed.mjs checks the installed result, docs/releasing.md explains them.
// lib/addon-loader.ts names the package for the running machine (PREBUILT_PLATFORMS there must match).

export const PLATFORMS = {
  'linux-x64': {
    /** npm manifest template (name, os, cpu, libc, files); pack.mjs sets its version to xpsr-native's */
    dir: 'packages/linux-x64',
    /** release CUDA architectures: SASS for each, plus PTX of the lowest (native/cuda/CMakeLists.txt) */
    cudaArchs: ['80', '86', '89', '90'],
    /**
     * The oldest runtime the binaries may need: the highest GLIBC_ / GLIBCXX_ symbol versions they
     * reference. Measured on the release builder (Debian 12, GCC 12.2, glibc 2.36): GLIBC_2.34 (pthread,
     * dlopen and sem_* moved into libc in 2.34) and GLIBCXX_3.4.30 (GCC 12's libstdc++).
     */
    floors: { glibc: '2.34', glibcxx: '3.4.30' },
    /** node-llama-cpp prebuilt variants the release captioner must cover */
    captionerVariants: ['cpu', 'cuda', 'vulkan'],
    /** packed size limit of the platform package, bytes */
    maxPackedBytes: 100e6,
  },
};

/** packed size limit of the main package (no binaries, no fixtures), bytes */
export const MAIN_MAX_PACKED_BYTES = 3e6;

export function currentPlatform() {
  return `${process.platform}-${process.arch}`;
}
