/*
 * inactive_internal.h - what the pool needs from lib/inactive.c besides the
 * public kvb_inactive_builtin(): checking a (possibly user-supplied) eviction
 * backend ops table before using it. Private: never installed.
 */
#ifndef KVB_INACTIVE_INTERNAL_H
#define KVB_INACTIVE_INTERNAL_H

#include "kvblock.h"

/**
 * @brief Check that an ops table can be used: version >= 1, a name, and every
 * method valid for version 1 except the optional ones (unevict, memory).
 * @return 0; -EINVAL for NULL or a table that fails a check.
 * Thread safety: pure (reads the table only). Ownership: none. Callbacks: none.
 */
int kvb__inactive_ops_validate(const kvb_inactive_ops *ops);

#endif /* KVB_INACTIVE_INTERNAL_H */
