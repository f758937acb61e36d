/*
 * tools/common/args.c - command-line parsing shared by the kvblock tools
 * (args.h): usage errors (exit 2), range-checked numbers, comma lists, choices
 * and the library's list of eviction policies. No state.
 */
#include "common/args.h"

#include <getopt.h>
#include <math.h>

void kvbt_usage_error(const char *prog, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help'.\n", prog);
    exit(2);
}

void kvbt_usage_getopt(const char *prog, int c, char **argv)
{
    if (c == ':')
        kvbt_usage_error(prog, "option '%s' needs an argument", argv[optind - 1]);
    kvbt_usage_error(prog, "unknown option '%s'", argv[optind - 1]);
}

void kvbt_usage_no_operands(const char *prog, int argc, char **argv)
{
    if (optind < argc)
        kvbt_usage_error(prog, "unexpected argument '%s'", argv[optind]);
}

uint64_t kvbt_arg_u64(const char *prog, const char *opt, const char *s, uint64_t min, uint64_t max)
{
    uint64_t v;
    if (!kvbt_parse_u64(s, min, max, &v))
        kvbt_usage_error(prog, "%s: '%s' is not an integer from %llu to %llu", opt, s,
                         (unsigned long long)min, (unsigned long long)max);
    return v;
}

uint64_t kvbt_arg_count(const char *prog, const char *opt, const char *s, uint64_t min,
                        uint64_t max)
{
    char buf[64];
    uint64_t mul = 1, v;
    size_t len = strlen(s);
    if (len >= sizeof buf)
        len = 0; /* too long to be a count: fails below */
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (len > 1 && (buf[len - 1] == 'k' || buf[len - 1] == 'K'))
        mul = 1000, buf[len - 1] = '\0';
    else if (len > 1 && buf[len - 1] == 'M')
        mul = 1000000, buf[len - 1] = '\0';
    if (!kvbt_parse_u64(buf, 0, UINT64_MAX / mul, &v) || v * mul < min || v * mul > max)
        kvbt_usage_error(prog, "%s: '%s' is not an integer from %llu to %llu", opt, s,
                         (unsigned long long)min, (unsigned long long)max);
    return v * mul;
}

double kvbt_arg_double(const char *prog, const char *opt, const char *s, double min, double max)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || !(v >= min && v <= max))
        kvbt_usage_error(prog, "%s: '%s' is not a number from %g to %g", opt, s, min, max);
    return v;
}

void kvbt_arg_each(const char *prog, const char *opt, const char *list,
                   void (*fn)(const char *item, void *arg), void *arg)
{
    char item[64];
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0 || len >= sizeof item)
            kvbt_usage_error(prog, "%s: bad list '%s'", opt, list);
        memcpy(item, p, len);
        item[len] = '\0';
        fn(item, arg);
        if (!comma)
            break;
        p = comma + 1;
    }
}

typedef struct count_list {
    const char *prog, *opt;
    uint64_t min, max;
    uint32_t *v;
    unsigned cap, n;
} count_list;

static void count_list_add(const char *item, void *arg)
{
    count_list *l = arg;
    if (l->n == l->cap)
        kvbt_usage_error(l->prog, "%s: at most %u values", l->opt, l->cap);
    l->v[l->n++] = (uint32_t)kvbt_arg_count(l->prog, l->opt, item, l->min, l->max);
}

unsigned kvbt_arg_count_list(const char *prog, const char *opt, const char *list, uint64_t min,
                             uint64_t max, uint32_t *v, unsigned cap)
{
    count_list l = {prog, opt, min, max > UINT32_MAX ? UINT32_MAX : max, v, cap, 0};
    kvbt_arg_each(prog, opt, list, count_list_add, &l);
    return l.n;
}

unsigned kvbt_arg_choice(const char *prog, const char *opt, const char *s, const char *const *names,
                         unsigned n)
{
    char all[512];
    size_t len = 0;
    all[0] = '\0';
    for (unsigned i = 0; i < n; i++) {
        if (strcmp(s, names[i]) == 0)
            return i;
        if (len < sizeof all)
            len += (size_t)snprintf(all + len, sizeof all - len, "%s%s", i ? ", " : "", names[i]);
    }
    kvbt_usage_error(prog, "%s: '%s' is not one of: %s", opt, s, all);
}

void kvbt_policy_names(char *buf, size_t cap)
{
    size_t len = 0;
    if (cap == 0)
        return;
    buf[0] = '\0';
    for (size_t i = 0; kvb_inactive_policy(i) && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? ", " : "",
                                kvb_inactive_policy(i)->name);
}

bool kvbt_policy_value(const char *name, kvb_evict_policy *out)
{
    const kvb_inactive_ops *ops = kvb_inactive_find(name);
    for (size_t i = 0; ops && kvb_inactive_policy(i); i++) {
        if (kvb_inactive_policy(i) == ops) {
            *out = (kvb_evict_policy)i;
            return true;
        }
    }
    return false;
}

kvb_evict_policy kvbt_arg_policy(const char *prog, const char *opt, const char *s)
{
    kvb_evict_policy v;
    if (!kvbt_policy_value(s, &v)) {
        char names[512];
        kvbt_policy_names(names, sizeof names);
        kvbt_usage_error(prog, "%s: '%s' is not an eviction policy of this build (%s)", opt, s,
                         names);
    }
    return v;
}
