// Q4_0 .. Q8_1 kernels for the avx2 path (body in quant_legacy_x86.h).
#define STRATA_ISA avx2
#include "tensor/quant_legacy_x86.h"
