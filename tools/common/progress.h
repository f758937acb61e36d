/*
 * tools/common/progress.h - a one-line progress bar on stderr for long tool
 * runs:
 *
 *   [##########..........]  52%  lru @ 8000 (run 7 of 36)  ETA 0:03
 *
 * The caller counts work in units of its choice (kvb-replay: block refs) and
 * reports it in chunks with kvbt_progress_add(); the bar redraws at most ten
 * times a second, so a chunk costs one clock read when the bar is on and one
 * branch when it is off. Off unless enabled at init (kvb-replay enables it when
 * stderr is a terminal and --quiet is not given); when off every call returns
 * at once and nothing is ever written.
 *
 * Timing: kvbt_progress_add() returns the nanoseconds it spent drawing, so a
 * timed loop can subtract them (the clock read itself is not counted).
 * Output to stdout while the bar is shown: call kvbt_progress_clear() first,
 * so that the bar's line is erased and the next draw starts a fresh line.
 */
#ifndef KVBT_PROGRESS_H
#define KVBT_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct kvbt_progress {
    bool on;
    bool shown;     /* a bar is on the terminal now */
    uint64_t total; /* units of work expected (0: unknown, no percentage) */
    uint64_t done;  /* units reported so far */
    uint64_t start_ns;
    uint64_t next_ns; /* earliest time of the next redraw */
    char label[128];
} kvbt_progress;

/* Initialize; the bar is active only when `on`. */
void kvbt_progress_init(kvbt_progress *p, bool on, uint64_t total);

/* Set the text shown after the percentage (printf format). */
void kvbt_progress_label(kvbt_progress *p, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* The redraw, rate limited; returns the nanoseconds spent drawing (0 when it did not). */
uint64_t kvbt_progress_draw(kvbt_progress *p, bool force);

/* Report `units` more units of work done; redraws at most every 100 ms. Returns the
 * nanoseconds spent drawing (0 when off or when it did not draw). */
static inline uint64_t kvbt_progress_add(kvbt_progress *p, uint64_t units)
{
    if (!p->on)
        return 0;
    p->done += units;
    return kvbt_progress_draw(p, false);
}

/* Erase the bar's line (if shown) so that other output can follow. */
void kvbt_progress_clear(kvbt_progress *p);

/* Erase the bar for good; later calls do nothing. */
void kvbt_progress_finish(kvbt_progress *p);

#endif /* KVBT_PROGRESS_H */
