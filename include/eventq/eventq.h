// eventq/eventq.h — everything an application needs: #include "eventq/eventq.h".
#pragma once

#include "eventq/error.h"
#include "eventq/event.h"
#include "eventq/guid.h"
#include "eventq/metrics.h"
#include "eventq/operations.h"
#include "eventq/options.h"
#include "eventq/queue.h"
#include "eventq/registry.h"
#include "eventq/session.h"
#include "eventq/signing.h"
#include "eventq/status.h"
#include "eventq/storage.h"
#include "eventq/subscription.h"
