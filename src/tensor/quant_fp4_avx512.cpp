// MXFP4 kernels for the avx512 path (body in quant_fp4_x86.h).
#define STRATA_ISA avx512
#include "tensor/quant_fp4_x86.h"
