// Q2_K .. Q8_K kernels for the avx512 path (body in quant_k_x86.h).
#define STRATA_ISA avx512
#include "tensor/quant_k_x86.h"
