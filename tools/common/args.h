/*
 * tools/common/args.h - command-line parsing shared by the kvblock tools
 * (kvb-bench, kvb-replay, kvb-fleet, kvb-index-bench): usage errors, numbers
 * with range checks, comma-separated lists, choices among names, and the
 * eviction policies the library lists.
 *
 * Every parser either returns a valid value or ends the program with a usage
 * error: "<prog>: <option>: <what is wrong>", then "Try '<prog> --help'." on
 * stderr, exit status 2 (the tools' convention for bad usage). Numbers are
 * strict (kvbt_parse_u64: decimal digits only, no sign, no blanks, no
 * overflow). Tools may exit; the library never does.
 */
#ifndef KVBT_ARGS_H
#define KVBT_ARGS_H

#include "kvblock.h"

#include "common/util.h"

/* Print "<prog>: <message>\nTry '<prog> --help'.\n" on stderr and exit with 2. */
KVBT_NORETURN KVBT_PRINTF(2, 3) void kvbt_usage_error(const char *prog, const char *fmt, ...);

/* The usage error for what getopt_long returned for a bad option: ':' (an option
 * without its argument; the optstring must start with ':') or anything else (an
 * unknown option). argv[optind - 1] is the offending word. */
KVBT_NORETURN void kvbt_usage_getopt(const char *prog, int c, char **argv);

/* A usage error when argv[optind..argc) is not empty (the tools take no operands). */
void kvbt_usage_no_operands(const char *prog, int argc, char **argv);

/* An unsigned decimal integer in [min, max]; else "<opt>: 'S' is not an integer
 * from MIN to MAX". */
uint64_t kvbt_arg_u64(const char *prog, const char *opt, const char *s, uint64_t min, uint64_t max);

/* As kvbt_arg_u64, and a count may end in k or K (x 1000) or M (x 1000000):
 * "10k" is 10000. The product is range-checked, never wrapped. */
uint64_t kvbt_arg_count(const char *prog, const char *opt, const char *s, uint64_t min,
                        uint64_t max);

/* A finite decimal number (strtod) in [min, max]; else "<opt>: 'S' is not a number
 * from MIN to MAX". */
double kvbt_arg_double(const char *prog, const char *opt, const char *s, double min, double max);

/* Call fn(item, arg) for each item of a comma-separated list, in order. An empty
 * item (",," or a trailing comma) or one longer than 63 bytes is a usage error
 * "<opt>: bad list 'LIST'". */
void kvbt_arg_each(const char *prog, const char *opt, const char *list,
                   void (*fn)(const char *item, void *arg), void *arg);

/* A comma-separated list of counts (kvbt_arg_count, each in [min, max]) into
 * v[0..cap); returns how many. More than cap items is a usage error. */
unsigned kvbt_arg_count_list(const char *prog, const char *opt, const char *list, uint64_t min,
                             uint64_t max, uint32_t *v, unsigned cap);

/* The index of s in names[0..n); else "<opt>: 'S' is not one of: A, B, C". */
unsigned kvbt_arg_choice(const char *prog, const char *opt, const char *s, const char *const *names,
                         unsigned n);

/* The built-in eviction policies as the library lists them (kvb_inactive_policy):
 * "lru, fifo, ..." into buf (truncated to cap bytes, always terminated). */
void kvbt_policy_names(char *buf, size_t cap);

/* The kvb_evict_policy value of the built-in backend called name: its index in
 * the library's list (kvb_inactive_find, kvb_inactive_policy). false when no
 * built-in backend has that name. */
bool kvbt_policy_value(const char *name, kvb_evict_policy *out);

/* kvbt_policy_value of s; else a usage error "<opt>: 'S' is not an eviction policy
 * of this build (lru, fifo, ...)". */
kvb_evict_policy kvbt_arg_policy(const char *prog, const char *opt, const char *s);

#endif /* KVBT_ARGS_H */
