namespace FlashLm.Tests;

/// <summary>
/// The source of the ggml oracle that FLASHLM_GGML_ORACLE names (QuantGgmlOracleTests here, QuantGgmlDotTests in
/// FlashLm.Kernels.Tests): a small C driver of our own, linked against ggml's unmodified sources. To build it from a
/// ggml checkout (github.com/ggml-org/ggml; the pinned hashes come from commit d99724f), write
/// <see cref="Driver"/> to harness.c in the checkout and run:
/// <code>
/// gcc -O2 -ffp-contract=off -std=gnu11 -Iinclude -Isrc -c src/ggml-quants.c -o quants.o
/// gcc -O2 -ffp-contract=off -std=gnu11 -Iinclude -Isrc -Isrc/ggml-cpu -DGGML_CPU_GENERIC -c src/ggml-cpu/quants.c -o cpuquants.o
/// gcc -O2 -ffp-contract=off -std=gnu11 -Iinclude -Isrc -Isrc/ggml-cpu -DGGML_CPU_GENERIC harness.c quants.o cpuquants.o -lm -o oracle
/// FLASHLM_GGML_ORACLE=$PWD/oracle dotnet test tests/FlashLm.Formats.Tests --filter FullyQualifiedName~QuantGgml
/// </code>
/// -ffp-contract=off keeps gcc from fusing multiply-adds, which would change ggml's own rounding; GGML_CPU_GENERIC
/// selects the generic (scalar) vec_dot.
/// </summary>
internal static class QuantGgmlOracleSource
{
    public const string Driver = """
// FlashLm quant test oracle: ggml's reference (de)quantizers and generic vec_dot, driven by files (usage in QuantGgmlOracleTests).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <stdarg.h>
#include <math.h>
#include "ggml.h"
#include "ggml-quants.h"
#include "ggml-cpu/quants.h"
float ggml_table_f32_f16[1 << 16];
void ggml_abort(const char * file, int line, const char * fmt, ...) { fprintf(stderr, "abort %s:%d\n", file, line); exit(3); }
size_t ggml_row_size(enum ggml_type t, int64_t n) { return 0; }
const char * ggml_type_name(enum ggml_type t) { return "?"; }
size_t ggml_type_size(enum ggml_type t) { return 0; }
static float h2f(uint16_t h) { // exact
    uint32_t s = (h >> 15) & 1, e = (h >> 10) & 31, m = h & 1023; float v;
    if (e == 0) v = ldexpf((float)m, -24); else if (e == 31) v = m ? __builtin_nanf("") : __builtin_inff(); else v = ldexpf((float)(m | 1024), (int)e - 25);
    return s ? -v : v;
}
static void * slurp(const char * p, long * len) { FILE * f = fopen(p, "rb"); fseek(f, 0, SEEK_END); *len = ftell(f); fseek(f, 0, SEEK_SET); void * b = malloc(*len); fread(b, 1, *len, f); fclose(f); return b; }
int main(int argc, char ** argv) {
    for (int i = 0; i < 65536; i++) ggml_table_f32_f16[i] = h2f((uint16_t)i);
    const char * op = argv[1], * t = argv[2]; int n = atoi(argv[3]); long len; void * in = slurp(argv[4], &len);
    FILE * out = fopen(argv[5], "wb");
    if (!strcmp(op, "deq")) {
        float * y = malloc(n * 4);
        if (!strcmp(t, "Q4_0")) dequantize_row_q4_0(in, y, n); else if (!strcmp(t, "Q4_1")) dequantize_row_q4_1(in, y, n);
        else if (!strcmp(t, "Q5_0")) dequantize_row_q5_0(in, y, n); else if (!strcmp(t, "Q5_1")) dequantize_row_q5_1(in, y, n);
        else if (!strcmp(t, "Q8_0")) dequantize_row_q8_0(in, y, n); else if (!strcmp(t, "Q2_K")) dequantize_row_q2_K(in, y, n);
        else if (!strcmp(t, "Q3_K")) dequantize_row_q3_K(in, y, n); else if (!strcmp(t, "Q4_K")) dequantize_row_q4_K(in, y, n);
        else if (!strcmp(t, "Q5_K")) dequantize_row_q5_K(in, y, n); else if (!strcmp(t, "Q6_K")) dequantize_row_q6_K(in, y, n);
        else if (!strcmp(t, "Q8_K")) dequantize_row_q8_K(in, y, n); else return 2;
        fwrite(y, 4, n, out);
    } else if (!strcmp(op, "q")) {
        char * y = calloc(1, n * 2);
        if (!strcmp(t, "Q8_0")) { quantize_row_q8_0_ref(in, (void*)y, n); fwrite(y, 34, n / 32, out); }
        else if (!strcmp(t, "Q8_1")) { quantize_row_q8_1_ref(in, (void*)y, n); fwrite(y, 36, n / 32, out); }
        else if (!strcmp(t, "Q8_K")) { quantize_row_q8_K_ref(in, (void*)y, n); fwrite(y, 292, n / 256, out); }
        else if (!strcmp(t, "Q4_K")) { quantize_row_q4_K_ref(in, (void*)y, n); fwrite(y, 144, n / 256, out); }
        else if (!strcmp(t, "Q5_K")) { quantize_row_q5_K_ref(in, (void*)y, n); fwrite(y, 176, n / 256, out); }
        else if (!strcmp(t, "Q6_K")) { quantize_row_q6_K_ref(in, (void*)y, n); fwrite(y, 210, n / 256, out); }
        else return 2;
    } else if (!strcmp(op, "dot")) { // in = row bytes then activation bytes; argv[6] = row byte count
        long rb = atol(argv[6]); const char * w = in, * x = (const char *)in + rb; float s = 0;
        if (!strcmp(t, "Q4_0")) ggml_vec_dot_q4_0_q8_0(n, &s, 0, w, 0, x, 0, 1);
        else if (!strcmp(t, "Q4_1")) ggml_vec_dot_q4_1_q8_1(n, &s, 0, w, 0, x, 0, 1);
        else if (!strcmp(t, "Q5_0")) ggml_vec_dot_q5_0_q8_0(n, &s, 0, w, 0, x, 0, 1);
        else if (!strcmp(t, "Q5_1")) ggml_vec_dot_q5_1_q8_1(n, &s, 0, w, 0, x, 0, 1);
        else if (!strcmp(t, "Q8_0")) ggml_vec_dot_q8_0_q8_0(n, &s, 0, w, 0, x, 0, 1);
        else if (!strcmp(t, "Q2_K")) ggml_vec_dot_q2_K_q8_K(n, &s, 0, w, 0, x, 0, 1);
        else if (!strcmp(t, "Q3_K")) ggml_vec_dot_q3_K_q8_K(n, &s, 0, w, 0, x, 0, 1);
        else if (!strcmp(t, "Q4_K")) ggml_vec_dot_q4_K_q8_K(n, &s, 0, w, 0, x, 0, 1);
        else if (!strcmp(t, "Q5_K")) ggml_vec_dot_q5_K_q8_K(n, &s, 0, w, 0, x, 0, 1);
        else if (!strcmp(t, "Q6_K")) ggml_vec_dot_q6_K_q8_K(n, &s, 0, w, 0, x, 0, 1);
        else return 2;
        fwrite(&s, 4, 1, out);
    }
    fclose(out); return 0;
}
""";
}
