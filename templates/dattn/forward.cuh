// dattn: everything a generated forward module includes.
#pragma once

#include "dattn/forward_common.cuh"
#include "dattn/forward_mma.cuh"
#include "dattn/forward_simt.cuh"
#include "dattn/forward_wgmma.cuh"
