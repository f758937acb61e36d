/*
 * annotate.h - happens-before annotations for race checkers.
 *
 * helgrind and DRD learn no ordering from atomic instructions, and TSan cannot
 * see inside code it did not instrument. Every lock-free synchronisation point
 * in kvblock (the reference-count word of a block) is therefore marked with
 * these three macros, which map to:
 *   - valgrind client requests in builds with -DKVB_ANNOTATE_VALGRIND
 *     (make helgrind / drd / memcheck);
 *   - __tsan_release / __tsan_acquire with -DKVB_ANNOTATE_TSAN (make tsan);
 *   - nothing otherwise (release builds pay nothing).
 *
 * KVB_HB_BEFORE(p)  this thread's prior accesses happen before a later
 *                   KVB_HB_AFTER(p) on another thread;
 * KVB_HB_AFTER(p)   see above (acquire side);
 * KVB_HB_FORGET(p)  p's address is about to be reused for an unrelated
 *                   object: drop what the checker remembers about it.
 */
#ifndef KVB_ANNOTATE_H
#define KVB_ANNOTATE_H

#if defined(KVB_ANNOTATE_VALGRIND)
#include <valgrind/helgrind.h>
#define KVB_HB_BEFORE(p)            ANNOTATE_HAPPENS_BEFORE(p)
#define KVB_HB_AFTER(p)             ANNOTATE_HAPPENS_AFTER(p)
#define KVB_HB_FORGET(p)            ANNOTATE_HAPPENS_BEFORE_FORGET_ALL(p)
#define KVB_ATOMIC_VAR(p, size)     VALGRIND_HG_DISABLE_CHECKING((p), (size))
#define KVB_ATOMIC_VAR_END(p, size) VALGRIND_HG_ENABLE_CHECKING((p), (size))
#elif defined(KVB_ANNOTATE_TSAN)
#include <sanitizer/tsan_interface.h>
#define KVB_HB_BEFORE(p)            __tsan_release((void *)(p))
#define KVB_HB_AFTER(p)             __tsan_acquire((void *)(p))
#define KVB_HB_FORGET(p)            ((void)(p))
#define KVB_ATOMIC_VAR(p, size)     ((void)(p))
#define KVB_ATOMIC_VAR_END(p, size) ((void)(p))
#else
#define KVB_HB_BEFORE(p)            ((void)(p))
#define KVB_HB_AFTER(p)             ((void)(p))
#define KVB_HB_FORGET(p)            ((void)(p))
#define KVB_ATOMIC_VAR(p, size)     ((void)(p))
#define KVB_ATOMIC_VAR_END(p, size) ((void)(p))
#endif

#endif /* KVB_ANNOTATE_H */
