// The collectives of a group of one: every operation is a copy or nothing.
// Lets the single-process trainer run the same FSDP code path as N ranks.
#ifndef MODAMBA_TRAINER_LOCAL_COLLECTIVES_H_
#define MODAMBA_TRAINER_LOCAL_COLLECTIVES_H_

#include <memory>

#include "core/backend.h"
#include "trainer/collectives.h"

namespace modamba {

// Copies go through `backend`, so buffers live on its device.
std::unique_ptr<Collectives> NewLocalCollectives(Backend* backend);

}  // namespace modamba

#endif  // MODAMBA_TRAINER_LOCAL_COLLECTIVES_H_
