/*
 * Linked into the fuzz build of the native DynamoDB parser (see native_parser.py).
 *
 * Edge coverage: the parser is compiled with gcc's -fsanitize-coverage=trace-pc,
 * which calls __sanitizer_cov_trace_pc() at the start of every basic block. This
 * records (previous block, this block) pairs as hit counts in an AFL-style map
 * that the fuzzer reads through ctypes to keep inputs that reach new edges. The
 * callback is hidden, so it binds inside this shared object (before any
 * sanitizer runtime that might define the same name), and is not itself
 * instrumented (this file is compiled without -fsanitize-coverage).
 *
 * Sanitizer probes: fuzz_probe_asan() reads one byte past a heap block and
 * fuzz_probe_ubsan() overflows a signed int. The fuzzer calls each in a child
 * process before fuzzing and fails unless the child dies with the sanitizer's
 * report: a build or a run without working sanitizers cannot pass.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define MAP_SIZE (1u << 15)

static uint8_t coverage_map[MAP_SIZE];
static uintptr_t previous_block;

__attribute__((visibility("hidden"), no_sanitize("address", "undefined"))) void
__sanitizer_cov_trace_pc(void) {
    uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    uintptr_t block = (pc ^ (pc >> 15)) & (MAP_SIZE - 1);
    uint8_t *count = &coverage_map[block ^ previous_block];
    if (*count != 255) (*count)++;
    previous_block = block >> 1;
}

uint8_t *fuzz_coverage_map(void) { return coverage_map; }

size_t fuzz_coverage_size(void) { return MAP_SIZE; }

void fuzz_coverage_reset(void) {
    for (size_t i = 0; i < MAP_SIZE; i++) coverage_map[i] = 0;
    previous_block = 0;
}

__attribute__((no_sanitize("undefined"))) /* left to ASan alone */
int fuzz_probe_asan(void) {
    volatile char *block = calloc(8, 1);
    if (!block) return -1;
    int value = block[8]; /* one past the end: AddressSanitizer must stop here */
    free((void *)block);
    return value;
}

int fuzz_probe_ubsan(int value) {
    volatile int big = value;
    return big + 0x7fffffff; /* signed overflow for value > 0: UBSan must stop here */
}
