/* kernels_scalar.c - the plain scalar reference path (no vectorisation). */
#pragma GCC optimize("no-tree-vectorize")
#define KSFX scalar
#define KNAME "scalar"
#define KISA CLLM_ISA_SCALAR
#include "cllm.h"
#include "kernels_impl.h"
