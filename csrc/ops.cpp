// Every pixelkernels schema, from the one table pixelkernels/schemas.def (which also defines
// the Triton variants pixelkernels::<op>_triton, from Python). The torch side of each op
// (csrc/<op>.cpp) registers its CPU and CUDA implementations; fake and autograd
// implementations of every variant are registered once, from Python (pixelkernels/_op.py).
#include "torch_utils.h"

TORCH_LIBRARY(PK_LIBRARY, m) {
#define PK_SCHEMA(name, schema) m.def(#name schema);
#include "../pixelkernels/schemas.def"
#undef PK_SCHEMA
}
