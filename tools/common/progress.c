/*
 * tools/common/progress.c - the progress bar of progress.h: a carriage return,
 * the bar, and an erase-to-end-of-line (ANSI "ESC [ K"), written with one
 * fputs to an unbuffered stderr so that a partial line is never left behind.
 */
#include "progress.h"
#include "util.h"

#define KVBT_PROGRESS_WIDTH  24        /* characters of the bar itself */
#define KVBT_PROGRESS_PERIOD 100000000 /* ns between redraws */

void kvbt_progress_init(kvbt_progress *p, bool on, uint64_t total)
{
    memset(p, 0, sizeof *p);
    p->on = on;
    p->total = total;
    p->start_ns = kvbt_now_ns();
}

void kvbt_progress_label(kvbt_progress *p, const char *fmt, ...)
{
    va_list ap;
    if (!p->on)
        return;
    va_start(ap, fmt);
    vsnprintf(p->label, sizeof p->label, fmt, ap);
    va_end(ap);
}

uint64_t kvbt_progress_draw(kvbt_progress *p, bool force)
{
    if (!p->on)
        return 0;
    uint64_t now = kvbt_now_ns();
    if (!force && now < p->next_ns)
        return 0;
    p->next_ns = now + KVBT_PROGRESS_PERIOD;

    char line[256], bar[KVBT_PROGRESS_WIDTH + 1], eta[32] = "";
    double frac = p->total ? (double)p->done / (double)p->total : 0.0;
    if (frac > 1.0)
        frac = 1.0;
    unsigned filled = (unsigned)(frac * KVBT_PROGRESS_WIDTH);
    for (unsigned i = 0; i < KVBT_PROGRESS_WIDTH; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[KVBT_PROGRESS_WIDTH] = '\0';
    double elapsed = (double)(now - p->start_ns) / 1e9;
    if (frac > 0.01 && elapsed > 1.0) {
        unsigned left = (unsigned)(elapsed * (1.0 - frac) / frac + 0.5);
        snprintf(eta, sizeof eta, "  ETA %u:%02u", left / 60, left % 60);
    }
    snprintf(line, sizeof line, "\r[%s] %3u%%  %s%s\033[K", bar, (unsigned)(frac * 100.0), p->label,
             eta);
    fputs(line, stderr);
    fflush(stderr);
    p->shown = true;
    return kvbt_now_ns() - now;
}

void kvbt_progress_clear(kvbt_progress *p)
{
    if (!p->on || !p->shown)
        return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    p->shown = false;
    p->next_ns = 0; /* redraw at the next report */
}

void kvbt_progress_finish(kvbt_progress *p)
{
    kvbt_progress_clear(p);
    p->on = false;
}
