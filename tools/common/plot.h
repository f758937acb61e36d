/*
 * tools/common/plot.h - line charts written directly as SVG 1.1 (no plotting
 * library, no external fonts or scripts): a title, axes with ticks and a grid,
 * one polyline with point markers per series, an optional horizontal
 * reference line, and a legend. kvb-replay --plot uses it for hit ratio vs
 * capacity.
 */
#ifndef KVBT_PLOT_H
#define KVBT_PLOT_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    KVBT_PLOT_LINE = 0, /* a palette colour, solid */
    KVBT_PLOT_MAIN_REF, /* black, dashed, drawn on top (e.g. optimal) */
    KVBT_PLOT_AUX_REF,  /* grey, dash-dotted, thinner (e.g. an upper bound) */
} kvbt_plot_style;

typedef struct kvbt_plot_series {
    const char *name;
    unsigned n;          /* points */
    const double *x, *y; /* x > 0 when the x axis is logarithmic */
    kvbt_plot_style style;
} kvbt_plot_series;

typedef struct kvbt_plot {
    const char *title, *subtitle; /* subtitle may be NULL */
    const char *xlabel, *ylabel;
    bool log_x; /* log2 x axis (capacities that double) */
    const kvbt_plot_series *series;
    unsigned n_series;
    double ref_y; /* horizontal reference line; < 0 for none */
    const char *ref_label;
} kvbt_plot;

/* Write the chart to path. Returns 0, or -1 with a message in err. */
int kvbt_plot_svg(const char *path, const kvbt_plot *p, char *err, size_t errcap);

#endif /* KVBT_PLOT_H */
