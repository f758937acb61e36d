/*
 * tools/kvb-replay/output.c - what kvb-replay prints: the trace header, one
 * line per finished (policy, capacity) configuration (text table or --csv), the
 * policy x capacity matrices (hit ratio, share of the LRU -> optimal gap
 * closed) and the --plot SVGs (hit ratio vs capacity, and p90 uncached tokens
 * per request, the TTFT proxy).
 */
#include "kvb-replay/replay.h"

#include "common/plot.h"

void replay_header(const kvbt_trace *t, const replay_opts *o, bool synthetic)
{
    double refs = (double)t->n_refs;
    if (synthetic)
        printf("trace: synthetic workload (built in, tools/common/synth.c)\n  %s\n", t->source);
    else
        printf("trace: %s (%s, format %s)\n", t->name, t->source,
               o->format == KVBT_FORMAT_IDS ? "ids" : "mooncake");
    printf("  requests %llu, block refs %llu, unique blocks %llu\n",
           (unsigned long long)t->n_requests, (unsigned long long)t->n_refs,
           (unsigned long long)t->unique_blocks);
    printf("  blocks/request mean %.1f, max %llu; infinite-cache %shit ratio %.2f%%\n",
           refs / (double)t->n_requests, (unsigned long long)t->max_request_blocks,
           t->max_request_blocks > 1 ? "prefix " : "",
           refs > 0 ? 100.0 * (double)t->infinite_hits / refs : 0.0);
    printf("  replay: prefix match, allocate + stage + register the rest, release last block "
           "first; ");
    if (o->window)
        printf("the last %u requests hold their blocks; ", o->window);
    if (o->lookahead)
        printf("the pools are hinted the next %u requests; ", o->lookahead);
    if (o->retention)
        printf("the first %u blocks of each request at priority %u%s; ", replay_ret.blocks,
               replay_ret.priority, replay_ret.duration_ms ? " (with a duration)" : "");
    if (o->ttl)
        printf("each request's blocks pinned for %u ms; ", o->ttl);
    if (o->demote)
        printf("new blocks %s demoted to priority 0; ",
               !strcmp(o->demote, "unhinted") ? "no hint reaches are" : "never used again are");
    printf("uncached = per request, %s not found cached; ",
           t->input_tokens ? "input tokens" : "blocks");
    printf("best of %llu\n\n", (unsigned long long)o->repeat);
}

void replay_columns(const replay_opts *o)
{
    if (o->csv) {
        printf("policy,capacity,requests,block_refs,hits,hit_ratio,seconds,ns_per_block_ref,"
               "evictions,window,early_releases,lookahead,uncached_p50,uncached_p90,"
               "uncached_p99\n");
        return;
    }
    printf("%-12s %10s %10s %10s %10s %9s %9s", "policy", "capacity", "hit ratio", "hits",
           "evictions", "ns/ref", "M refs/s");
    if (o->window)
        printf(" %9s", "early rel");
    printf("  %s\n", "uncached p50/p90/p99");
}

/* One finished configuration, to every sink: the text table or --csv on stdout.
 * (A network sink such as a future --publish ENDPOINT belongs here too: it gets the
 * same policy, capacity and cell, once per finished configuration.) */
void replay_emit(const replay_opts *o, const kvbt_trace *t, const replay_policy *pol,
                 uint32_t capacity, const replay_cell *c)
{
    double refs = (double)t->n_refs;
    double ratio = refs > 0 ? (double)c->hits / refs : 0.0;
    double secs = (double)c->ns / 1e9;
    double nsref = refs > 0 ? (double)c->ns / refs : 0.0;
    if (o->csv) {
        printf("%s,%u,%llu,%llu,%llu,%.6f,%.6f,%.2f,%llu,%u,%llu,%u", pol->name, capacity,
               (unsigned long long)t->n_requests, (unsigned long long)t->n_refs,
               (unsigned long long)c->hits, ratio, secs, nsref, (unsigned long long)c->evictions,
               o->window, (unsigned long long)c->early_releases,
               pol->kind == REPLAY_POOL ? o->lookahead : 0);
        if (c->has_uncached)
            printf(",%u,%u,%u\n", c->uncached[0], c->uncached[1], c->uncached[2]);
        else
            printf(",,,\n");
    } else {
        printf("%-12s %10u %9.2f%% %10llu %10llu %9.1f %9.2f", pol->name, capacity, 100.0 * ratio,
               (unsigned long long)c->hits, (unsigned long long)c->evictions, nsref,
               secs > 0 ? refs / secs / 1e6 : 0.0);
        if (o->window)
            printf(" %9llu", (unsigned long long)c->early_releases);
        if (c->has_uncached)
            printf("  %u/%u/%u", c->uncached[0], c->uncached[1], c->uncached[2]);
        printf("\n");
    }
    fflush(stdout);
}

/* The policy x capacity matrices: hit ratio, and the share of the LRU -> optimal gap
 * each policy closes (when both ran). */
void replay_matrix(const replay_opts *o, const kvbt_trace *t, const replay_policy *sel,
                   unsigned n_sel, const replay_cell *cells)
{
    double refs = (double)t->n_refs;
    int lru = -1, opt = -1;
    for (unsigned p = 0; p < n_sel; p++) {
        if (strcmp(sel[p].name, "lru") == 0)
            lru = (int)p;
        if (sel[p].kind == REPLAY_OPTIMAL)
            opt = (int)p;
    }
    for (int table = 0; table < 2; table++) {
        if (table == 1 && (lru < 0 || opt < 0 || n_sel < 3))
            break;
        printf("\n%s (rows: policy; columns: capacity in blocks)",
               table == 0 ? "hit ratio, %" : "share of the LRU -> optimal gap closed, %");
        if (o->window)
            printf(", window %u", o->window);
        printf("\n");
        printf("%-12s", "policy");
        for (unsigned c = 0; c < o->n_capacities; c++)
            printf(" %8u", o->capacities[c]);
        printf("\n");
        for (unsigned p = 0; p < n_sel; p++) {
            if (table == 1 && ((int)p == lru || (int)p == opt))
                continue;
            printf("%-12s", sel[p].name);
            for (unsigned c = 0; c < o->n_capacities; c++) {
                const replay_cell *x = &cells[p * o->n_capacities + c];
                if (!x->done) {
                    printf(" %8s", "-");
                    continue;
                }
                double v = 100.0 * (double)x->hits / refs;
                if (table == 1) {
                    double l = (double)cells[(unsigned)lru * o->n_capacities + c].hits;
                    double b = (double)cells[(unsigned)opt * o->n_capacities + c].hits;
                    if (b - l < 0.01 * refs) {
                        printf(" %8s", "-"); /* under one point: no gap worth a share */
                        continue;
                    }
                    v = 100.0 * ((double)x->hits - l) / (b - l);
                }
                printf(" %8.2f", v);
            }
            printf("\n");
        }
    }
    fflush(stdout);
}

void replay_plot(const replay_opts *o, const kvbt_trace *t, bool synthetic,
                 const replay_policy *sel, unsigned n_sel, const replay_cell *cells)
{
    kvbt_plot_series *series = kvbt_xmalloc_array(n_sel, sizeof *series);
    double *xs = kvbt_xmalloc_array((size_t)n_sel * o->n_capacities, sizeof *xs);
    double *ys = kvbt_xmalloc_array((size_t)n_sel * o->n_capacities, sizeof *ys);
    unsigned ns = 0;
    uint32_t cmin = UINT32_MAX, cmax = 0;
    for (unsigned c = 0; c < o->n_capacities; c++) {
        cmin = o->capacities[c] < cmin ? o->capacities[c] : cmin;
        cmax = o->capacities[c] > cmax ? o->capacities[c] : cmax;
    }
    for (unsigned p = 0; p < n_sel; p++) {
        kvbt_plot_series *se = &series[ns];
        se->name = sel[p].name;
        se->x = xs + (size_t)ns * o->n_capacities;
        se->y = ys + (size_t)ns * o->n_capacities;
        se->n = 0;
        se->style = sel[p].kind == REPLAY_OPTIMAL ? KVBT_PLOT_MAIN_REF
                    : sel[p].kind == REPLAY_FLAT  ? KVBT_PLOT_AUX_REF
                                                  : KVBT_PLOT_LINE;
        for (unsigned c = 0; c < o->n_capacities; c++) {
            const replay_cell *x = &cells[p * o->n_capacities + c];
            if (!x->done)
                continue;
            xs[(size_t)ns * o->n_capacities + se->n] = o->capacities[c];
            ys[(size_t)ns * o->n_capacities + se->n] = 100.0 * (double)x->hits / (double)t->n_refs;
            se->n++;
        }
        if (se->n)
            ns++;
    }
    bool ids = t->max_request_blocks <= 1 && !synthetic;
    char title[256], subtitle[256], reflabel[64];
    snprintf(title, sizeof title, "%s vs capacity: %s", ids ? "Hit ratio" : "Prefix hit ratio",
             synthetic ? "built-in synthetic workload" : t->name);
    snprintf(subtitle, sizeof subtitle, "kvb-replay, %llu requests, %llu block refs%s; window %u",
             (unsigned long long)t->n_requests, (unsigned long long)t->n_refs,
             ids ? ", one block each" : ", prefix replay", o->window);
    double inf = 100.0 * (double)t->infinite_hits / (double)t->n_refs;
    snprintf(reflabel, sizeof reflabel, "infinite cache %.2f%%", inf);
    bool log_x = cmin > 0 && (double)cmax / (double)cmin >= 4.0;
    kvbt_plot plot = {
        .title = title,
        .subtitle = subtitle,
        .xlabel = log_x ? "capacity, blocks (log scale)" : "capacity, blocks",
        .ylabel = ids ? "hit ratio, %" : "prefix hit ratio, %",
        .log_x = log_x,
        .series = series,
        .n_series = ns,
        .ref_y = inf,
        .ref_label = reflabel,
    };
    char err[512];
    if (kvbt_plot_svg(o->plot, &plot, err, sizeof err) < 0)
        kvbt_die(prog, "--plot: %s", err);
    if (!o->quiet && !o->csv)
        printf("\nplot: %s\n", o->plot);

    /* the TTFT proxy: p90 of the per-request uncached tokens, pool policies only */
    ns = 0;
    for (unsigned p = 0; p < n_sel; p++) {
        kvbt_plot_series *se = &series[ns];
        se->name = sel[p].name;
        se->x = xs + (size_t)ns * o->n_capacities;
        se->y = ys + (size_t)ns * o->n_capacities;
        se->n = 0;
        se->style = KVBT_PLOT_LINE;
        for (unsigned c = 0; c < o->n_capacities; c++) {
            const replay_cell *x = &cells[p * o->n_capacities + c];
            if (!x->done || !x->has_uncached)
                continue;
            xs[(size_t)ns * o->n_capacities + se->n] = o->capacities[c];
            ys[(size_t)ns * o->n_capacities + se->n] = x->uncached[1];
            se->n++;
        }
        if (se->n)
            ns++;
    }
    if (ns) {
        size_t len = strlen(o->plot);
        char *path2 = kvbt_xmalloc_array(len + 16, 1);
        size_t stem = len >= 4 && strcmp(o->plot + len - 4, ".svg") == 0 ? len - 4 : len;
        snprintf(path2, len + 16, "%.*s-uncached.svg", (int)stem, o->plot);
        char title2[256];
        snprintf(title2, sizeof title2, "Uncached %s per request, p90: %s",
                 t->input_tokens ? "input tokens" : "blocks",
                 synthetic ? "built-in synthetic workload" : t->name);
        kvbt_plot plot2 = plot;
        plot2.title = title2;
        plot2.ylabel = t->input_tokens ? "p90 uncached input tokens (TTFT proxy)"
                                       : "p90 uncached blocks per request";
        plot2.n_series = ns;
        plot2.ref_y = -1;
        plot2.ref_label = NULL;
        if (kvbt_plot_svg(path2, &plot2, err, sizeof err) < 0)
            kvbt_die(prog, "--plot: %s", err);
        if (!o->quiet && !o->csv)
            printf("plot: %s\n", path2);
        free(path2);
    }
    free(series);
    free(xs);
    free(ys);
}
