/* precision_check.h - which training precisions this CPU can run (precision_check.c). */
#ifndef CLLM_MODEL_PRECISION_CHECK_H
#define CLLM_MODEL_PRECISION_CHECK_H

/* 0 if precision p (CLLM_PRECISION_*) is usable under ISA isa, else fails
 * (sets the error). */
int model_check_precision(int p, int isa);
#endif
