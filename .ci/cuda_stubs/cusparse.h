#pragma once
// Syntax-check stub (toolkit here lacks cuSPARSE): opaque handle only.
typedef struct cusparseContext* cusparseHandle_t;
typedef enum { CUSPARSE_STATUS_SUCCESS = 0 } cusparseStatus_t;
