// MXFP4 kernels for the avx2 path (body in quant_fp4_x86.h).
#define STRATA_ISA avx2
#include "tensor/quant_fp4_x86.h"
