/*
 * tools/common/plot.c - the SVG line charts of plot.h.
 *
 * Layout (user units = px): an 860 x 520 canvas; the plot area leaves room on
 * the left for the y tick labels and axis title, at the bottom for the x tick
 * labels and title, at the top for the title, and on the right for the legend.
 * The y axis starts at 0 and ends at a "nice" value above the largest y (and
 * the reference line); ticks are 1, 2 or 5 times a power of ten apart, at most
 * ten of them. A logarithmic x axis puts a tick at every distinct x of the data
 * (thinned when crowded); a linear one uses nice ticks like y.
 * Colours: the Tableau 10 palette, in series order; a main reference series
 * is black and dashed and drawn last (on top), an auxiliary one grey and
 * dash-dotted. Text is XML-escaped; the font is the generic sans-serif.
 */
#include "plot.h"
#include "util.h"

#include <math.h>

#define PLOT_W      860.0
#define PLOT_H      520.0
#define PLOT_LEFT   78.0
#define PLOT_RIGHT  190.0 /* legend column */
#define PLOT_TOP    64.0
#define PLOT_BOTTOM 62.0

static const char *const plot_palette[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                           "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
#define PLOT_NPALETTE (sizeof plot_palette / sizeof plot_palette[0])

static void plot_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", f);
            break;
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        default:
            fputc(*s, f);
        }
    }
}

/* A tick step of 1, 2 or 5 x 10^e giving at most max_ticks intervals over [0, span]. */
static double plot_step(double span, int max_ticks)
{
    if (!(span > 0))
        return 1.0;
    double raw = span / max_ticks, e = pow(10.0, floor(log10(raw)));
    double steps[] = {1, 2, 5, 10};
    for (int i = 0; i < 4; i++)
        if (steps[i] * e >= raw)
            return steps[i] * e;
    return 10 * e;
}

/* A number as a short label: 1000 -> "1000", 2.5 -> "2.5", 32768 -> "32768". */
static void plot_num(char *buf, size_t cap, double v)
{
    if (fabs(v - round(v)) < 1e-9)
        snprintf(buf, cap, "%.0f", v);
    else
        snprintf(buf, cap, "%g", v);
}

/* Colour of series s: palette colours go to plain lines in order. */
static const char *plot_colour(const kvbt_plot *p, unsigned s)
{
    if (p->series[s].style == KVBT_PLOT_MAIN_REF)
        return "#000000";
    if (p->series[s].style == KVBT_PLOT_AUX_REF)
        return "#7f7f7f";
    unsigned k = 0;
    for (unsigned i = 0; i < s; i++)
        k += p->series[i].style == KVBT_PLOT_LINE;
    return plot_palette[k % PLOT_NPALETTE];
}

static const char *plot_dash(kvbt_plot_style style)
{
    switch (style) {
    case KVBT_PLOT_MAIN_REF:
        return " stroke-dasharray=\"7 4\"";
    case KVBT_PLOT_AUX_REF:
        return " stroke-dasharray=\"8 3 2 3\"";
    default:
        return "";
    }
}

int kvbt_plot_svg(const char *path, const kvbt_plot *p, char *err, size_t errcap)
{
    double xmin = INFINITY, xmax = -INFINITY, ymax = p->ref_y > 0 ? p->ref_y : 0;
    unsigned npts = 0;
    for (unsigned s = 0; s < p->n_series; s++) {
        for (unsigned i = 0; i < p->series[s].n; i++) {
            double x = p->series[s].x[i], y = p->series[s].y[i];
            if (p->log_x && !(x > 0)) {
                snprintf(err, errcap, "%s: x values must be > 0 on a logarithmic axis", path);
                return -1;
            }
            xmin = fmin(xmin, x);
            xmax = fmax(xmax, x);
            ymax = fmax(ymax, y);
            npts++;
        }
    }
    if (npts == 0) {
        snprintf(err, errcap, "%s: nothing to plot", path);
        return -1;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errcap, "%s: %s", path, strerror(errno));
        return -1;
    }

    /* Axes ranges. */
    double ystep = plot_step(ymax * 1.05, 10);
    double ytop = ceil(ymax * 1.05 / ystep) * ystep;
    if (ytop <= 0)
        ytop = ystep;
    double lx0, lx1; /* x range in axis units (log2 x when log_x) */
    if (p->log_x) {
        lx0 = log2(xmin);
        lx1 = log2(xmax);
    } else {
        lx0 = 0;
        lx1 = xmax;
    }
    double pad = (lx1 - lx0) * 0.04;
    if (pad == 0)
        pad = p->log_x ? 0.5 : (lx1 > 0 ? lx1 * 0.05 : 1);
    lx0 -= pad;
    lx1 += pad;
    if (!p->log_x && lx0 < 0 && xmin >= 0)
        lx0 = 0;

    const double ax = PLOT_LEFT, ay = PLOT_TOP, aw = PLOT_W - PLOT_LEFT - PLOT_RIGHT,
                 ah = PLOT_H - PLOT_TOP - PLOT_BOTTOM;
#define PX(x) (ax + ((p->log_x ? log2(x) : (x)) - lx0) / (lx1 - lx0) * aw)
#define PY(y) (ay + ah - (y) / ytop * ah)

    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%.0f\" "
            "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" font-family=\"DejaVu Sans, Helvetica, "
            "Arial, sans-serif\">\n"
            "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#ffffff\"/>\n",
            PLOT_W, PLOT_H, PLOT_W, PLOT_H, PLOT_W, PLOT_H);

    /* Title. */
    fprintf(f, "<text x=\"%.1f\" y=\"26\" font-size=\"17\" font-weight=\"bold\">", ax);
    plot_text(f, p->title ? p->title : "");
    fputs("</text>\n", f);
    if (p->subtitle) {
        fprintf(f, "<text x=\"%.1f\" y=\"46\" font-size=\"12\" fill=\"#555555\">", ax);
        plot_text(f, p->subtitle);
        fputs("</text>\n", f);
    }

    /* Grid and y ticks. */
    char lab[64];
    fputs("<g font-size=\"12\" fill=\"#333333\">\n", f);
    for (double y = 0; y <= ytop + ystep * 1e-6; y += ystep) {
        double py = PY(y);
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e3e3e3\" "
                "stroke-width=\"1\"/>\n",
                ax, py, ax + aw, py);
        plot_num(lab, sizeof lab, y);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", ax - 8, py + 4,
                lab);
    }
    /* x ticks: every distinct x of the data on a log axis, nice steps on a linear one. */
    double ticks[256];
    unsigned nt = 0;
    if (p->log_x) {
        for (unsigned s = 0; s < p->n_series; s++)
            for (unsigned i = 0; i < p->series[s].n && nt < 256; i++) {
                double x = p->series[s].x[i];
                bool seen = false;
                for (unsigned j = 0; j < nt; j++)
                    seen |= ticks[j] == x;
                if (!seen)
                    ticks[nt++] = x;
            }
        for (unsigned i = 1; i < nt; i++) /* insertion sort */
            for (unsigned j = i; j > 0 && ticks[j - 1] > ticks[j]; j--) {
                double tmp = ticks[j];
                ticks[j] = ticks[j - 1];
                ticks[j - 1] = tmp;
            }
    } else {
        double xs = plot_step(lx1 - lx0, 8);
        for (double x = ceil(lx0 / xs) * xs; x <= lx1 && nt < 256; x += xs)
            ticks[nt++] = x;
    }
    double last_px = -1e9;
    for (unsigned i = 0; i < nt; i++) {
        double px = PX(ticks[i]);
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e3e3e3\" "
                "stroke-width=\"1\"/>\n",
                px, ay, px, ay + ah);
        if (px - last_px < 44) /* crowded: keep the grid line, skip the label */
            continue;
        last_px = px;
        plot_num(lab, sizeof lab, ticks[i]);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", px,
                ay + ah + 18, lab);
    }
    fputs("</g>\n", f);

    /* Axes and their titles. */
    fprintf(f,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333333\" "
            "stroke-width=\"1.2\"/>\n"
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333333\" "
            "stroke-width=\"1.2\"/>\n",
            ax, ay + ah, ax + aw, ay + ah, ax, ay, ax, ay + ah);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\">", ax + aw / 2,
            PLOT_H - 18);
    plot_text(f, p->xlabel ? p->xlabel : "");
    fputs("</text>\n", f);
    fprintf(f,
            "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\" "
            "transform=\"rotate(-90 %.1f %.1f)\">",
            22.0, ay + ah / 2, 22.0, ay + ah / 2);
    plot_text(f, p->ylabel ? p->ylabel : "");
    fputs("</text>\n", f);

    /* Reference line. */
    if (p->ref_y > 0) {
        double py = PY(p->ref_y);
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888888\" "
                "stroke-width=\"1.2\" stroke-dasharray=\"2 4\"/>\n",
                ax, py, ax + aw, py);
        if (p->ref_label) {
            fprintf(f,
                    "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#666666\" "
                    "text-anchor=\"start\">",
                    ax + 6, py - 5);
            plot_text(f, p->ref_label);
            fputs("</text>\n", f);
        }
    }

    /* Series: a polyline in x order, then markers; plain lines first, the auxiliary
     * references next, the main reference on top. */
    for (int pass = 0; pass < 3; pass++) {
        for (unsigned s = 0; s < p->n_series; s++) {
            const kvbt_plot_series *se = &p->series[s];
            if ((int)se->style != (pass == 0   ? KVBT_PLOT_LINE
                                   : pass == 1 ? KVBT_PLOT_AUX_REF
                                               : KVBT_PLOT_MAIN_REF))
                continue;
            const char *c = plot_colour(p, s), *dash = plot_dash(se->style);
            unsigned *ord = kvbt_xmalloc_array(se->n ? se->n : 1, sizeof *ord);
            for (unsigned i = 0; i < se->n; i++)
                ord[i] = i;
            for (unsigned i = 1; i < se->n; i++)
                for (unsigned j = i; j > 0 && se->x[ord[j - 1]] > se->x[ord[j]]; j--) {
                    unsigned tmp = ord[j];
                    ord[j] = ord[j - 1];
                    ord[j - 1] = tmp;
                }
            fprintf(f, "<g>\n<title>");
            plot_text(f, se->name);
            fprintf(f,
                    "</title>\n<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%s\"%s "
                    "points=\"",
                    c, se->style == KVBT_PLOT_AUX_REF ? "1.6" : "2.2", dash);
            for (unsigned i = 0; i < se->n; i++)
                fprintf(f, "%s%.1f,%.1f", i ? " " : "", PX(se->x[ord[i]]), PY(se->y[ord[i]]));
            fputs("\"/>\n", f);
            for (unsigned i = 0; i < se->n; i++)
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%s\" fill=\"%s\"/>\n",
                        PX(se->x[ord[i]]), PY(se->y[ord[i]]),
                        se->style == KVBT_PLOT_AUX_REF ? "2.4" : "3.2", c);
            fputs("</g>\n", f);
            free(ord);
        }
    }

    /* Legend. */
    double lx = ax + aw + 22, ly = ay + 8;
    fputs("<g font-size=\"13\">\n", f);
    for (unsigned s = 0; s < p->n_series; s++) {
        const kvbt_plot_series *se = &p->series[s];
        const char *c = plot_colour(p, s);
        double y = ly + 22.0 * s;
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                "stroke-width=\"2.2\"%s/>\n"
                "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.2\" fill=\"%s\"/>\n",
                lx, y, lx + 28, y, c, plot_dash(se->style), lx + 14, y, c);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">", lx + 36, y + 4.5);
        plot_text(f, se->name);
        fputs("</text>\n", f);
    }
    if (p->ref_y > 0 && p->ref_label) {
        double y = ly + 22.0 * p->n_series;
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888888\" "
                "stroke-width=\"1.2\" stroke-dasharray=\"2 4\"/>\n"
                "<text x=\"%.1f\" y=\"%.1f\">infinite cache</text>\n",
                lx, y, lx + 28, y, lx + 36, y + 4.5);
    }
    fputs("</g>\n</svg>\n", f);
#undef PX
#undef PY

    bool bad = ferror(f) != 0;
    if (fclose(f) != 0)
        bad = true;
    if (bad) {
        snprintf(err, errcap, "%s: write error: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}
