/*
 * test_device.c - device block tables, slot mapping and KV block copies
 * (include/kvblock/device.h).
 *
 * Semantics tests run on both backends (suite "cpu" and suite "vulkan"; the
 * Vulkan ones are skipped with a message when no Vulkan device exists; force
 * Mesa's lavapipe with VK_ICD_FILENAMES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json).
 * The parity suite drives both backends and an independent model with the same
 * random edits, syncs, token batches and copies, and requires identical
 * results everywhere.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvblock/device.h"
#include "support/rng.h"

/* ------------------------------------------------------------------------ */
/* helpers                                                                  */
/* ------------------------------------------------------------------------ */

static kvb_device *open_or_skip(kvb_device_kind kind)
{
    kvb_device *d = NULL;
    int rc = kvb_device_open(kind, &d);
#ifdef KVB_HAVE_VULKAN
    if (rc == -ENODEV && kind == KVB_DEVICE_VULKAN)
        cr_skip_test("no Vulkan device available (%s); install mesa-vulkan-drivers or set "
                     "VK_ICD_FILENAMES to lavapipe's ICD to run the Vulkan tests on a CPU",
                     kvb_strerror(rc));
#else
    if (rc == -ENODEV && kind == KVB_DEVICE_VULKAN)
        cr_skip_test("Vulkan backend not built (make VULKAN=0, or no Vulkan headers or "
                     "glslangValidator)");
#endif
    cr_assert_eq(rc, 0, "kvb_device_open(%d): %s", (int)kind, kvb_strerror(rc));
    return d;
}

static kvb_table *mk_table(kvb_device *d, uint32_t seqs, uint32_t blocks, uint32_t bs)
{
    kvb_table *t = NULL;
    int rc = kvb_table_create(d, seqs, blocks, bs, &t);
    cr_assert_eq(rc, 0, "kvb_table_create: %s", kvb_strerror(rc));
    return t;
}

static uint64_t submissions(kvb_device *d)
{
    kvb_device_stats s;
    cr_assert_eq(kvb_device_get_stats(d, &s), 0);
    return s.submissions;
}

static kvb_device_stats stats(kvb_device *d)
{
    kvb_device_stats s;
    cr_assert_eq(kvb_device_get_stats(d, &s), 0);
    return s;
}

/* Row as read back from the device. */
static void expect_row(kvb_table *t, uint32_t row, uint32_t n, const int32_t *want)
{
    int32_t got[64];
    cr_assert(n <= 64);
    cr_assert_eq(kvb_table_read_row(t, row, got, n), 0);
    for (uint32_t i = 0; i < n; i++)
        cr_assert_eq(got[i], want[i], "row %u entry %u: got %d want %d", row, i, got[i], want[i]);
}

static int32_t dev_ctx(kvb_table *t, uint32_t row)
{
    int32_t v = -7;
    cr_assert_eq(kvb_table_read_context_lens(t, row, 1, &v), 0);
    return v;
}

static void parity_run(uint64_t seed, uint32_t S, uint32_t B, uint32_t BS, int steps);

/* Each semantic test runs once per backend. */
#define BOTH(name)                                                                                 \
    static void name(kvb_device_kind kind);                                                        \
    Test(cpu, name)                                                                                \
    {                                                                                              \
        name(KVB_DEVICE_CPU);                                                                      \
    }                                                                                              \
    Test(vulkan, name)                                                                             \
    {                                                                                              \
        name(KVB_DEVICE_VULKAN);                                                                   \
    }                                                                                              \
    static void name(kvb_device_kind kind)

/* ------------------------------------------------------------------------ */
/* device selection                                                         */
/* ------------------------------------------------------------------------ */

Test(device, open_bad_args)
{
    kvb_device *d = NULL;
    cr_assert_eq(kvb_device_open(KVB_DEVICE_CPU, NULL), -EINVAL);
    cr_assert_eq(kvb_device_open((kvb_device_kind)42, &d), -EINVAL);
    cr_assert_null(d);
    cr_assert_str_eq(kvb_device_name(NULL), "(null)");
    kvb_device_close(NULL);
    cr_assert_eq(kvb_device_wait_idle(NULL), -EINVAL);
}

Test(device, cpu_name_and_kind)
{
    kvb_device *d = open_or_skip(KVB_DEVICE_CPU);
    cr_assert_str_eq(kvb_device_name(d), "cpu");
    cr_assert_eq(kvb_device_get_kind(d), KVB_DEVICE_CPU);
    cr_assert_eq(kvb_device_wait_idle(d), 0);
    kvb_device_close(d);
}

Test(device, env_selects_cpu)
{
    setenv("KVBLOCK_DEVICE", "cpu", 1);
    kvb_device *d = NULL;
    cr_assert_eq(kvb_device_open(KVB_DEVICE_AUTO, &d), 0);
    cr_assert_eq(kvb_device_get_kind(d), KVB_DEVICE_CPU);
    kvb_device_close(d);
}

Test(device, env_unknown_is_einval)
{
    setenv("KVBLOCK_DEVICE", "tpu", 1);
    kvb_device *d = NULL;
    cr_assert_eq(kvb_device_open(KVB_DEVICE_AUTO, &d), -EINVAL);
    cr_assert_null(d);
}

Test(device, auto_opens_something)
{
    unsetenv("KVBLOCK_DEVICE");
    kvb_device *d = NULL;
    cr_assert_eq(kvb_device_open(KVB_DEVICE_AUTO, &d), 0);
    kvb_device_kind k = kvb_device_get_kind(d);
    cr_assert(k == KVB_DEVICE_CPU || k == KVB_DEVICE_VULKAN);
    if (k == KVB_DEVICE_VULKAN) /* AUTO never takes a CPU implementation */
        cr_assert_null(strstr(kvb_device_name(d), "llvmpipe"));
    kvb_device_close(d);
}

Test(device, no_driver_is_enodev)
{
    /* the loader finds no driver: instance creation fails (TOOLING.md) */
    setenv("VK_ICD_FILENAMES", "/nonexistent.json", 1);
    setenv("VK_DRIVER_FILES", "/nonexistent.json", 1);
    kvb_device *d = NULL;
    cr_assert_eq(kvb_device_open(KVB_DEVICE_VULKAN, &d), -ENODEV);
    cr_assert_null(d);
    setenv("KVBLOCK_DEVICE", "vulkan", 1);
    cr_assert_eq(kvb_device_open(KVB_DEVICE_AUTO, &d), -ENODEV);
    unsetenv("KVBLOCK_DEVICE");
    cr_assert_eq(kvb_device_open(KVB_DEVICE_AUTO, &d), 0); /* falls back to cpu */
    cr_assert_eq(kvb_device_get_kind(d), KVB_DEVICE_CPU);
    kvb_device_close(d);
}

#ifndef KVB_HAVE_VULKAN
Test(device, not_built_is_enodev)
{
    kvb_device *d = NULL;
    cr_assert_eq(kvb_device_open(KVB_DEVICE_VULKAN, &d), -ENODEV);
}
#endif

BOTH(vulkan_name)
{
    kvb_device *d = open_or_skip(kind);
    if (kind == KVB_DEVICE_VULKAN)
        cr_assert_eq(strncmp(kvb_device_name(d), "vulkan: ", 8), 0, "%s", kvb_device_name(d));
    cr_assert_eq(kvb_device_get_kind(d), kind);
    kvb_device_close(d);
}

/* ------------------------------------------------------------------------ */
/* table semantics                                                          */
/* ------------------------------------------------------------------------ */

BOTH(create_bad_args)
{
    kvb_device *d = open_or_skip(kind);
    kvb_table *t = NULL;
    cr_assert_eq(kvb_table_create(NULL, 4, 4, 16, &t), -EINVAL);
    cr_assert_eq(kvb_table_create(d, 0, 4, 16, &t), -EINVAL);
    cr_assert_eq(kvb_table_create(d, 4, 0, 16, &t), -EINVAL);
    cr_assert_eq(kvb_table_create(d, 4, 4, 0, &t), -EINVAL);
    cr_assert_eq(kvb_table_create(d, 4, 4, 1025, &t), -EINVAL);
    cr_assert_eq(kvb_table_create(d, 4, 4, 16, NULL), -EINVAL);
    cr_assert_eq(kvb_table_create(d, 1u << 20, 1u << 13, 16, &t), -E2BIG);
    cr_assert_null(t);
    kvb_table_destroy(NULL);
    kvb_device_close(d);
}

BOTH(unset_entries_read_zero)
{
    kvb_device *d = open_or_skip(kind);
    kvb_table *t = mk_table(d, 4, 8, 16);
    static const int32_t zero[8];
    for (uint32_t r = 0; r < 4; r++) {
        expect_row(t, r, 8, zero);
        cr_assert_eq(dev_ctx(t, r), 0);
        cr_assert_eq(kvb_table_row_len(t, r), 0);
    }
    uint64_t s0 = submissions(d);
    cr_assert_eq(kvb_table_sync(t), 0); /* nothing pending: no submission */
    cr_assert_eq(submissions(d), s0);
    kvb_table_destroy(t);
    kvb_device_close(d);
}

BOTH(set_row_replaces_row)
{
    kvb_device *d = open_or_skip(kind);
    kvb_table *t = mk_table(d, 4, 8, 16);
    uint32_t a[5] = {10, 11, 12, 13, 14}, b[2] = {20, 21};
    cr_assert_eq(kvb_table_set_row(t, 2, a, 5), 0);
    cr_assert_eq(kvb_table_sync(t), 0);
    expect_row(t, 2, 8, (int32_t[]){10, 11, 12, 13, 14, 0, 0, 0});
    cr_assert_eq(kvb_table_set_row(t, 2, b, 2), 0);
    cr_assert_eq(kvb_table_row_len(t, 2), 2);
    cr_assert_eq(kvb_table_sync(t), 0);
    expect_row(t, 2, 8, (int32_t[]){20, 21, 0, 0, 0, 0, 0, 0});
    /* other rows untouched */
    expect_row(t, 1, 8, (int32_t[]){0, 0, 0, 0, 0, 0, 0, 0});
    kvb_table_destroy(t);
    kvb_device_close(d);
}

BOTH(edits_visible_only_after_sync)
{
    kvb_device *d = open_or_skip(kind);
    kvb_table *t = mk_table(d, 2, 4, 16);
    uint32_t a[3] = {1, 2, 3};
    cr_assert_eq(kvb_table_set_row(t, 0, a, 3), 0);
    cr_assert_eq(kvb_table_set_context_len(t, 0, 40), 0);
    expect_row(t, 0, 4, (int32_t[]){0, 0, 0, 0});
    cr_assert_eq(dev_ctx(t, 0), 0);
    uint64_t s0 = submissions(d);
    cr_assert_eq(kvb_table_sync(t), 0);
    cr_assert_eq(submissions(d), s0 + 1, "one submission per sync");
    expect_row(t, 0, 4, (int32_t[]){1, 2, 3, 0});
    cr_assert_eq(dev_ctx(t, 0), 40);
    kvb_table_destroy(t);
    kvb_device_close(d);
}

BOTH(set_row_zero_keeps_context_len)
{
    kvb_device *d = open_or_skip(kind);
    kvb_table *t = mk_table(d, 3, 4, 16);
    uint32_t a[3] = {7, 8, 9};
    cr_assert_eq(kvb_table_set_row(t, 1, a, 3), 0);
    cr_assert_eq(kvb_table_set_context_len(t, 1, 33), 0);
    cr_assert_eq(kvb_table_sync(t), 0);
    cr_assert_eq(kvb_table_set_row(t, 1, NULL, 0), 0);
    cr_assert_eq(kvb_table_sync(t), 0);
    expect_row(t, 1, 4, (int32_t[]){0, 0, 0, 0});
    cr_assert_eq(dev_ctx(t, 1), 33);
    cr_assert_eq(kvb_table_row_len(t, 1), 0);
    /* clear_row also resets the context length */
    cr_assert_eq(kvb_table_set_row(t, 1, a, 2), 0);
    cr_assert_eq(kvb_table_clear_row(t, 1), 0);
    cr_assert_eq(kvb_table_sync(t), 0);
    expect_row(t, 1, 4, (int32_t[]){0, 0, 0, 0});
    cr_assert_eq(dev_ctx(t, 1), 0);
    kvb_table_destroy(t);
    kvb_device_close(d);
}

BOTH(append_and_limits)
{
    kvb_device *d = open_or_skip(kind);
    kvb_table *t = mk_table(d, 2, 4, 16);
    uint32_t a[2] = {3, 4}, b[3] = {5, 6, 7};
    cr_assert_eq(kvb_table_append(t, 0, a, 2), 0);
    cr_assert_eq(kvb_table_append(t, 0, b, 3), -ERANGE); /* 5 > 4 */
    cr_assert_eq(kvb_table_row_len(t, 0), 2);
    cr_assert_eq(kvb_table_append(t, 0, b, 2), 0);
    cr_assert_eq(kvb_table_append(t, 0, NULL, 0), 0);
    cr_assert_eq(kvb_table_append(t, 0, b, 1), -ERANGE);
    cr_assert_eq(kvb_table_sync(t), 0);
    expect_row(t, 0, 4, (int32_t[]){3, 4, 5, 6});
    kvb_table_destroy(t);
    kvb_device_close(d);
}

BOTH(move_and_swap_carry_context)
{
    kvb_device *d = open_or_skip(kind);
    kvb_table *t = mk_table(d, 4, 4, 16);
    uint32_t a[3] = {1, 2, 3}, b[1] = {9};
    cr_assert_eq(kvb_table_set_row(t, 0, a, 3), 0);
    cr_assert_eq(kvb_table_set_context_len(t, 0, 35), 0);
    cr_assert_eq(kvb_table_set_row(t, 1, b, 1), 0);
    cr_assert_eq(kvb_table_set_context_len(t, 1, 5), 0);
    cr_assert_eq(kvb_table_sync(t), 0);

    cr_assert_eq(kvb_table_swap_rows(t, 0, 1), 0);
    cr_assert_eq(kvb_table_sync(t), 0);
    expect_row(t, 0, 4, (int32_t[]){9, 0, 0, 0});
    expect_row(t, 1, 4, (int32_t[]){1, 2, 3, 0});
    cr_assert_eq(dev_ctx(t, 0), 5);
    cr_assert_eq(dev_ctx(t, 1), 35);
    cr_assert_eq(kvb_table_row_len(t, 0), 1);
    cr_assert_eq(kvb_table_row_len(t, 1), 3);

    cr_assert_eq(kvb_table_move_row(t, 1, 3), 0);
    cr_assert_eq(kvb_table_sync(t), 0);
    expect_row(t, 3, 4, (int32_t[]){1, 2, 3, 0});
    expect_row(t, 1, 4, (int32_t[]){0, 0, 0, 0});
    cr_assert_eq(dev_ctx(t, 3), 35);
    cr_assert_eq(dev_ctx(t, 1), 0);
    cr_assert_eq(kvb_table_row_len(t, 1), 0);
    cr_assert_eq(kvb_table_row_len(t, 3), 3);

    /* a longer row moved onto a shorter one and back: the tail is unset */
    cr_assert_eq(kvb_table_move_row(t, 0, 3), 0);
    cr_assert_eq(kvb_table_sync(t), 0);
    expect_row(t, 3, 4, (int32_t[]){9, 0, 0, 0});
    cr_assert_eq(dev_ctx(t, 3), 5);

    /* self swap / self move: no-ops, nothing to upload */
    uint64_t s0 = submissions(d);
    cr_assert_eq(kvb_table_swap_rows(t, 3, 3), 0);
    cr_assert_eq(kvb_table_move_row(t, 3, 3), 0);
    cr_assert_eq(kvb_table_sync(t), 0);
    cr_assert_eq(submissions(d), s0);
    expect_row(t, 3, 4, (int32_t[]){9, 0, 0, 0});
    cr_assert_eq(dev_ctx(t, 3), 5);
    kvb_table_destroy(t);
    kvb_device_close(d);
}

BOTH(range_and_argument_errors)
{
    kvb_device *d = open_or_skip(kind);
    kvb_table *t = mk_table(d, 4, 4, 16);
    uint32_t ids[5] = {1, 2, 3, 4, 5};
    int32_t out[5];
    cr_assert_eq(kvb_table_set_row(t, 4, ids, 1), -ERANGE);
    cr_assert_eq(kvb_table_set_row(t, 0, ids, 5), -ERANGE);
    cr_assert_eq(kvb_table_append(t, 4, ids, 1), -ERANGE);
    cr_assert_eq(kvb_table_clear_row(t, 4), -ERANGE);
    cr_assert_eq(kvb_table_move_row(t, 0, 4), -ERANGE);
    cr_assert_eq(kvb_table_move_row(t, 4, 0), -ERANGE);
    cr_assert_eq(kvb_table_move_row(t, 4, 4), -ERANGE);
    cr_assert_eq(kvb_table_swap_rows(t, 0, 4), -ERANGE);
    cr_assert_eq(kvb_table_swap_rows(t, 5, 5), -ERANGE);
    cr_assert_eq(kvb_table_set_context_len(t, 4, 1), -ERANGE);
    cr_assert_eq(kvb_table_read_row(t, 4, out, 1), -ERANGE);
    cr_assert_eq(kvb_table_read_row(t, 0, out, 5), -ERANGE);
    cr_assert_eq(kvb_table_read_context_lens(t, 3, 2, out), -ERANGE);
    cr_assert_eq(kvb_table_read_context_lens(t, 5, 0, out), -ERANGE);
    cr_assert_eq(kvb_table_read_context_lens(t, 4, 0, NULL), 0);
    cr_assert_eq(kvb_table_read_row(t, 0, NULL, 0), 0);

    uint32_t big[2] = {1, 0x80000000u};
    cr_assert_eq(kvb_table_set_row(t, 0, big, 2), -EINVAL);
    cr_assert_eq(kvb_table_append(t, 0, big, 2), -EINVAL);
    cr_assert_eq(kvb_table_set_row(t, 0, NULL, 1), -EINVAL);
    cr_assert_eq(kvb_table_set_context_len(t, 0, 0x80000000u), -EINVAL);
    cr_assert_eq(kvb_table_set_row(NULL, 0, ids, 1), -EINVAL);
    cr_assert_eq(kvb_table_sync(NULL), -EINVAL);
    cr_assert_eq(kvb_table_read_row(t, 0, NULL, 1), -EINVAL);
    /* a failed call changed nothing: nothing pending */
    uint64_t s0 = submissions(d);
    cr_assert_eq(kvb_table_sync(t), 0);
    cr_assert_eq(submissions(d), s0);
    cr_assert_eq(kvb_table_row_len(t, 0), 0);
    kvb_table_destroy(t);
    kvb_device_close(d);
}

BOTH(coalescing_counts)
{
    kvb_device *d = open_or_skip(kind);
    const uint32_t S = 64, B = 32;
    kvb_table *t = mk_table(d, S, B, 16);
    uint32_t ids[32];
    for (uint32_t r = 0; r < S; r++) {
        for (uint32_t i = 0; i < B; i++)
            ids[i] = r * B + i + 1;
        cr_assert_eq(kvb_table_set_row(t, r, ids, B), 0);
    }
    kvb_device_stats a = stats(d);
    cr_assert_eq(kvb_table_sync(t), 0);
    kvb_device_stats b = stats(d);
    cr_assert_eq(b.submissions - a.submissions, 1);
    cr_assert_eq(b.upload_regions - a.upload_regions, 1, "full rewrite is one region");
    cr_assert_eq(b.upload_bytes - a.upload_bytes, (uint64_t)S * B * 4);

    /* rewriting identical rows uploads nothing */
    for (uint32_t r = 0; r < S; r++) {
        for (uint32_t i = 0; i < B; i++)
            ids[i] = r * B + i + 1;
        cr_assert_eq(kvb_table_set_row(t, r, ids, B), 0);
    }
    cr_assert_eq(kvb_table_sync(t), 0);
    cr_assert_eq(stats(d).submissions, b.submissions);

    /* one changed entry in every 8th row: far apart, separate regions */
    for (uint32_t r = 0; r < S; r += 8) {
        for (uint32_t i = 0; i < B; i++)
            ids[i] = r * B + i + 1;
        ids[B / 2] = 999999;
        cr_assert_eq(kvb_table_set_row(t, r, ids, B), 0);
    }
    cr_assert_eq(kvb_table_sync(t), 0);
    kvb_device_stats c = stats(d);
    cr_assert_eq(c.submissions - b.submissions, 1);
    cr_assert_eq(c.upload_regions - b.upload_regions, S / 8);
    cr_assert_eq(c.upload_bytes - b.upload_bytes, (uint64_t)(S / 8) * 4);
    int32_t row[32];
    cr_assert_eq(kvb_table_read_row(t, 8, row, B), 0);
    cr_assert_eq(row[B / 2], 999999);
    cr_assert_eq(row[0], 8 * 32 + 1);
    kvb_table_destroy(t);
    kvb_device_close(d);
}

BOTH(many_short_spans_upload)
{
    /* one block appended to each of 300 rows 100 entries apart, plus every context
     * length: hundreds of short spans (the Vulkan backend scatters them) and one long
     * one (a copy region) in the same sync */
    kvb_device *d = open_or_skip(kind);
    const uint32_t S = 300, B = 100;
    kvb_table *t = mk_table(d, S, B, 16);
    uint32_t id;
    for (int round = 0; round < 3; round++) {
        for (uint32_t r = 0; r < S; r++) {
            id = r * 1000 + (uint32_t)round + 1;
            cr_assert_eq(kvb_table_append(t, r, &id, 1), 0);
            cr_assert_eq(kvb_table_set_context_len(t, r, (uint32_t)round * 16 + r % 16), 0);
        }
        kvb_device_stats a = stats(d);
        cr_assert_eq(kvb_table_sync(t), 0);
        kvb_device_stats b = stats(d);
        cr_assert_eq(b.submissions, a.submissions + 1);
        /* round 0: context length 0 of rows 0, 16, ... is unchanged, yet the run merges */
        cr_assert_eq(b.upload_regions - a.upload_regions, S + 1);
        if (kind == KVB_DEVICE_VULKAN) /* the short spans went through the scatter kernel */
            cr_assert_eq(b.dispatches, a.dispatches + 1);
    }
    int32_t row[3], ctx[300];
    for (uint32_t r = 0; r < S; r++) {
        cr_assert_eq(kvb_table_read_row(t, r, row, 3), 0);
        for (int i = 0; i < 3; i++)
            cr_assert_eq(row[i], (int32_t)(r * 1000 + (uint32_t)i + 1), "row %u entry %d", r, i);
    }
    cr_assert_eq(kvb_table_read_context_lens(t, 0, S, ctx), 0);
    for (uint32_t r = 0; r < S; r++)
        cr_assert_eq(ctx[r], (int32_t)(32 + r % 16));
    /* and a slot mapping right after scattered edits (upload in the same submission) */
    for (uint32_t r = 0; r < S; r++) {
        id = 7 * r;
        cr_assert_eq(kvb_table_append(t, r, &id, 1), 0);
    }
    uint32_t rows[300], pos[300];
    int64_t out[300];
    for (uint32_t r = 0; r < S; r++) {
        rows[r] = r;
        pos[r] = 3 * 16 + r % 16;
    }
    cr_assert_eq(kvb_table_slot_mapping(t, rows, pos, S, S, out), 0);
    for (uint32_t r = 0; r < S; r++)
        cr_assert_eq(out[r], (int64_t)7 * r * 16 + r % 16);
    kvb_table_destroy(t);
    kvb_device_close(d);
}

/* ------------------------------------------------------------------------ */
/* slot mapping                                                             */
/* ------------------------------------------------------------------------ */

BOTH(slot_mapping_values_and_padding)
{
    kvb_device *d = open_or_skip(kind);
    kvb_table *t = mk_table(d, 4, 4, 16);
    uint32_t r0[3] = {5, 9, 2}, r2[1] = {0x7fffffff};
    cr_assert_eq(kvb_table_set_row(t, 0, r0, 3), 0);
    cr_assert_eq(kvb_table_set_row(t, 2, r2, 1), 0);
    cr_assert_eq(kvb_table_sync(t), 0);
    uint32_t rows[5] = {0, 0, 0, 0, 2};
    uint32_t pos[5] = {0, 15, 16, 47, 3};
    int64_t out[8];
    memset(out, 0x55, sizeof out);
    cr_assert_eq(kvb_table_slot_mapping(t, rows, pos, 5, 7, out), 0);
    cr_assert_eq(out[0], 5 * 16 + 0);
    cr_assert_eq(out[1], 5 * 16 + 15);
    cr_assert_eq(out[2], 9 * 16 + 0);
    cr_assert_eq(out[3], 2 * 16 + 15);
    cr_assert_eq(out[4], (int64_t)0x7fffffff * 16 + 3, "slot beyond 32 bits");
    cr_assert_eq(out[5], -1);
    cr_assert_eq(out[6], -1);
    cr_assert_eq(out[7], 0x5555555555555555ll, "nothing written past padded");
    kvb_table_destroy(t);
    kvb_device_close(d);
}

BOTH(slot_mapping_non_power_of_two_block)
{
    kvb_device *d = open_or_skip(kind);
    kvb_table *t = mk_table(d, 2, 5, 12);
    uint32_t r1[5] = {100, 7, 0, 3, 0x40000000};
    cr_assert_eq(kvb_table_set_row(t, 1, r1, 5), 0);
    uint32_t rows[6] = {1, 1, 1, 1, 1, 1}, pos[6] = {0, 11, 12, 25, 59, 48};
    int64_t out[6];
    /* pending edits are uploaded by the slot mapping itself */
    cr_assert_eq(kvb_table_slot_mapping(t, rows, pos, 6, 6, out), 0);
    int64_t want[6] = {1200, 1211, 84, 1, (int64_t)0x40000000 * 12 + 11, (int64_t)0x40000000 * 12};
    for (int i = 0; i < 6; i++)
        cr_assert_eq(out[i], want[i], "token %d: %lld", i, (long long)out[i]);
    expect_row(t, 1, 5, (int32_t[]){100, 7, 0, 3, 0x40000000});
    uint64_t s0 = submissions(d);
    cr_assert_eq(kvb_table_sync(t), 0); /* already uploaded */
    cr_assert_eq(submissions(d), s0);
    kvb_table_destroy(t);
    kvb_device_close(d);
}

BOTH(slot_mapping_errors_before_dispatch)
{
    kvb_device *d = open_or_skip(kind);
    kvb_table *t = mk_table(d, 4, 4, 16);
    uint32_t r0[2] = {5, 6};
    cr_assert_eq(kvb_table_set_row(t, 0, r0, 2), 0);
    cr_assert_eq(kvb_table_sync(t), 0);
    uint32_t r1[1] = {8};
    cr_assert_eq(kvb_table_set_row(t, 1, r1, 1), 0); /* pending */
    int64_t out[4];
    memset(out, 0x33, sizeof out);
    uint64_t s0 = submissions(d);
    /* position 32 is past row 0's two blocks */
    uint32_t rows[3] = {0, 1, 0}, pos[3] = {1, 2, 32};
    cr_assert_eq(kvb_table_slot_mapping(t, rows, pos, 3, 4, out), -ERANGE);
    /* row past max_seqs */
    uint32_t rows2[2] = {0, 4}, pos2[2] = {0, 0};
    cr_assert_eq(kvb_table_slot_mapping(t, rows2, pos2, 2, 2, out), -ERANGE);
    /* an empty row has no positions at all */
    uint32_t rows3[1] = {2}, pos3[1] = {0};
    cr_assert_eq(kvb_table_slot_mapping(t, rows3, pos3, 1, 1, out), -ERANGE);
    cr_assert_eq(kvb_table_slot_mapping(t, rows, pos, 3, 2, out), -EINVAL); /* padded < n */
    cr_assert_eq(kvb_table_slot_mapping(t, NULL, pos, 1, 1, out), -EINVAL);
    cr_assert_eq(kvb_table_slot_mapping(t, rows, pos, 1, 1, NULL), -EINVAL);
    cr_assert_eq(submissions(d), s0, "nothing dispatched");
    for (int i = 0; i < 4; i++)
        cr_assert_eq(out[i], 0x3333333333333333ll);
    expect_row(t, 1, 1, (int32_t[]){0}); /* the pending edit is still pending */
    cr_assert_eq(kvb_table_sync(t), 0);
    expect_row(t, 1, 1, (int32_t[]){8});
    kvb_table_destroy(t);
    kvb_device_close(d);
}

BOTH(slot_mapping_empty_batches)
{
    kvb_device *d = open_or_skip(kind);
    kvb_table *t = mk_table(d, 2, 2, 16);
    uint64_t s0 = submissions(d);
    cr_assert_eq(kvb_table_slot_mapping(t, NULL, NULL, 0, 0, NULL), 0);
    int64_t out[3] = {7, 7, 7};
    cr_assert_eq(kvb_table_slot_mapping(t, NULL, NULL, 0, 3, out), 0);
    cr_assert_eq(out[0], -1);
    cr_assert_eq(out[2], -1);
    cr_assert_eq(submissions(d), s0);
    kvb_table_destroy(t);
    kvb_device_close(d);
}

static uint64_t large_batch(kvb_device_kind kind);

BOTH(slot_mapping_large_batch_grows_buffers)
{
    cr_assert_eq(large_batch(kind), 1, "one submission per slot mapping");
}

Test(vulkan, slot_mapping_split_by_storage_range)
{
    /* 64 KiB of storage-buffer range: 8192 tokens per submission, so the 38400-token
     * batch takes 5 submissions; the staging ring also exceeds the bound range */
    setenv("KVBLOCK_VULKAN_MAX_RANGE", "65536", 1);
    cr_assert_eq(large_batch(KVB_DEVICE_VULKAN), 5);
}

Test(parity, tables_small_storage_range)
{
    setenv("KVBLOCK_VULKAN_MAX_RANGE", "65536", 1);
    parity_run(4, 130, 100, 16, 1500);
}

/* Returns the submissions of the first slot mapping (which also uploads the table). */
static uint64_t large_batch(kvb_device_kind kind)
{
    kvb_device *d = open_or_skip(kind);
    uint64_t subs = 0;
    const uint32_t S = 300, B = 8, BS = 16, N = S * B * BS; /* 38400 tokens */
    kvb_table *t = mk_table(d, S, B, BS);
    uint32_t ids[8];
    for (uint32_t r = 0; r < S; r++) {
        for (uint32_t i = 0; i < B; i++)
            ids[i] = (r * 7919u + i * 104729u) % 1000003u;
        cr_assert_eq(kvb_table_set_row(t, r, ids, B), 0);
    }
    uint32_t *rows = malloc(N * sizeof *rows), *pos = malloc(N * sizeof *pos);
    int64_t *out = malloc((N + 100) * sizeof *out);
    for (uint32_t i = 0; i < N; i++) {
        rows[i] = (i * 2654435761u) % S;
        pos[i] = i % (B * BS);
    }
    for (int round = 0; round < 2; round++) {
        uint64_t s0 = submissions(d);
        cr_assert_eq(kvb_table_slot_mapping(t, rows, pos, N, N + 100, out), 0);
        if (round == 0)
            subs = submissions(d) - s0;
        for (uint32_t i = 0; i < N; i++) {
            uint32_t r = rows[i], b = pos[i] / BS;
            int64_t want = (int64_t)((r * 7919u + b * 104729u) % 1000003u) * BS + pos[i] % BS;
            cr_assert_eq(out[i], want, "token %u", i);
        }
        for (uint32_t i = N; i < N + 100; i++)
            cr_assert_eq(out[i], -1);
    }
    free(rows);
    free(pos);
    free(out);
    kvb_table_destroy(t);
    kvb_device_close(d);
    return subs;
}

/* ------------------------------------------------------------------------ */
/* KV buffers                                                               */
/* ------------------------------------------------------------------------ */

static void fill_block(unsigned char *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((seed * 131u + i * 7u) ^ (seed >> 3));
}

BOTH(kv_write_read_zero_init)
{
    kvb_device *d = open_or_skip(kind);
    kvb_kv_buffer *b = NULL;
    cr_assert_eq(kvb_kv_buffer_create(d, 0, 64, &b), -EINVAL);
    cr_assert_eq(kvb_kv_buffer_create(d, 4, 0, &b), -EINVAL);
    cr_assert_eq(kvb_kv_buffer_create(NULL, 4, 64, &b), -EINVAL);
    cr_assert_eq(kvb_kv_buffer_create(d, 8, 66, &b), 0); /* odd size on purpose */
    cr_assert_eq(kvb_kv_buffer_num_blocks(b), 8);
    cr_assert_eq(kvb_kv_buffer_block_bytes(b), 66);
    unsigned char w[66], r[66];
    cr_assert_eq(kvb_kv_buffer_read(b, 7, r), 0);
    for (int i = 0; i < 66; i++)
        cr_assert_eq(r[i], 0);
    fill_block(w, 66, 3);
    cr_assert_eq(kvb_kv_buffer_write(b, 7, w), 0);
    cr_assert_eq(kvb_kv_buffer_read(b, 7, r), 0);
    cr_assert_eq(memcmp(w, r, 66), 0);
    cr_assert_eq(kvb_kv_buffer_write(b, 8, w), -ERANGE);
    cr_assert_eq(kvb_kv_buffer_read(b, 8, r), -ERANGE);
    cr_assert_eq(kvb_kv_buffer_write(b, 0, NULL), -EINVAL);
    kvb_kv_buffer_destroy(b);
    kvb_device_close(d);
}

BOTH(copy_blocks_and_hazards)
{
    kvb_device *d = open_or_skip(kind);
    kvb_kv_buffer *b = NULL;
    const size_t BB = 128;
    cr_assert_eq(kvb_kv_buffer_create(d, 8, BB, &b), 0);
    unsigned char w[8][128], r[128];
    for (uint32_t i = 0; i < 8; i++) {
        fill_block(w[i], BB, i + 1);
        cr_assert_eq(kvb_kv_buffer_write(b, i, w[i]), 0);
    }
    uint64_t s0 = submissions(d);
    /* hazards: dst == src, dst used as a source, dst twice, out of range */
    cr_assert_eq(kvb_kv_buffer_copy_blocks(b, (kvb_copy_pair[]){{1, 1}}, 1), -EINVAL);
    cr_assert_eq(kvb_kv_buffer_copy_blocks(b, (kvb_copy_pair[]){{0, 1}, {1, 2}}, 2), -EINVAL);
    cr_assert_eq(kvb_kv_buffer_copy_blocks(b, (kvb_copy_pair[]){{1, 2}, {0, 1}}, 2), -EINVAL);
    cr_assert_eq(kvb_kv_buffer_copy_blocks(b, (kvb_copy_pair[]){{0, 3}, {1, 3}}, 2), -EINVAL);
    cr_assert_eq(kvb_kv_buffer_copy_blocks(b, (kvb_copy_pair[]){{0, 8}}, 1), -EINVAL);
    cr_assert_eq(kvb_kv_buffer_copy_blocks(b, (kvb_copy_pair[]){{8, 0}}, 1), -EINVAL);
    cr_assert_eq(kvb_kv_buffer_copy_blocks(b, NULL, 1), -EINVAL);
    /* empty batch */
    cr_assert_eq(kvb_kv_buffer_copy_blocks(b, NULL, 0), 0);
    cr_assert_eq(submissions(d), s0, "rejected and empty batches submit nothing");
    for (uint32_t i = 0; i < 8; i++) {
        cr_assert_eq(kvb_kv_buffer_read(b, i, r), 0);
        cr_assert_eq(memcmp(r, w[i], BB), 0, "block %u changed by a rejected batch", i);
    }
    /* one source feeding two destinations, plus an independent pair */
    s0 = submissions(d);
    cr_assert_eq(kvb_kv_buffer_copy_blocks(b, (kvb_copy_pair[]){{0, 5}, {0, 6}, {2, 7}}, 3), 0);
    cr_assert_eq(submissions(d), s0 + 1, "one submission per batch");
    cr_assert_eq(kvb_kv_buffer_read(b, 5, r), 0);
    cr_assert_eq(memcmp(r, w[0], BB), 0);
    cr_assert_eq(kvb_kv_buffer_read(b, 6, r), 0);
    cr_assert_eq(memcmp(r, w[0], BB), 0);
    cr_assert_eq(kvb_kv_buffer_read(b, 7, r), 0);
    cr_assert_eq(memcmp(r, w[2], BB), 0);
    cr_assert_eq(kvb_kv_buffer_read(b, 4, r), 0);
    cr_assert_eq(memcmp(r, w[4], BB), 0);
    /* a batch that reads what the previous batch wrote */
    cr_assert_eq(kvb_kv_buffer_copy_blocks(b, (kvb_copy_pair[]){{5, 1}}, 1), 0);
    cr_assert_eq(kvb_kv_buffer_read(b, 1, r), 0);
    cr_assert_eq(memcmp(r, w[0], BB), 0);
    kvb_kv_buffer_destroy(b);
    kvb_device_close(d);
}

BOTH(destroy_with_pending_work)
{
    kvb_device *d = open_or_skip(kind);
    kvb_table *t = mk_table(d, 512, 64, 16);
    uint32_t ids[64];
    for (uint32_t r = 0; r < 512; r++) {
        for (uint32_t i = 0; i < 64; i++)
            ids[i] = r + i;
        cr_assert_eq(kvb_table_set_row(t, r, ids, 64), 0);
    }
    cr_assert_eq(kvb_table_sync(t), 0); /* not waited for */
    kvb_table_destroy(t);

    kvb_kv_buffer *b = NULL;
    cr_assert_eq(kvb_kv_buffer_create(d, 64, 65536, &b), 0);
    kvb_copy_pair p[32];
    for (uint32_t i = 0; i < 32; i++)
        p[i] = (kvb_copy_pair){i, 32 + i};
    cr_assert_eq(kvb_kv_buffer_copy_blocks(b, p, 32), 0);
    kvb_kv_buffer_destroy(b);

    /* close before the children: the device lives until the last one goes */
    t = mk_table(d, 4, 4, 16);
    cr_assert_eq(kvb_kv_buffer_create(d, 4, 64, &b), 0);
    for (uint32_t i = 0; i < 4; i++)
        ids[i] = i;
    cr_assert_eq(kvb_table_set_row(t, 0, ids, 4), 0);
    cr_assert_eq(kvb_table_sync(t), 0);
    kvb_device_close(d);
    expect_row(t, 0, 4, (int32_t[]){0, 1, 2, 3});
    cr_assert_eq(kvb_kv_buffer_copy_blocks(b, (kvb_copy_pair[]){{0, 1}}, 1), 0);
    kvb_table_destroy(t);
    kvb_kv_buffer_destroy(b);
}

/* Two threads, each with its own table and KV buffer, on one shared device. */
struct worker {
    kvb_device *d;
    uint32_t seed;
    int failures;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    kvb_table *t = NULL;
    kvb_kv_buffer *b = NULL;
    if (kvb_table_create(w->d, 64, 16, 16, &t) || kvb_kv_buffer_create(w->d, 32, 256, &b)) {
        w->failures++;
        kvb_table_destroy(t);
        return NULL;
    }
    uint32_t ids[16], rows[64], pos[64];
    int64_t out[64];
    unsigned char blk[256], back[256];
    for (uint32_t it = 0; it < 200; it++) {
        for (uint32_t r = 0; r < 64; r++) {
            for (uint32_t i = 0; i < 16; i++)
                ids[i] = w->seed * 100000 + it * 100 + r + i;
            if (kvb_table_set_row(t, r, ids, 16))
                w->failures++;
            rows[r] = r;
            pos[r] = (it + r) % 256;
        }
        if (it % 2 && kvb_table_sync(t))
            w->failures++;
        if (kvb_table_slot_mapping(t, rows, pos, 64, 64, out))
            w->failures++;
        for (uint32_t r = 0; r < 64; r++) {
            int64_t want =
                (int64_t)(w->seed * 100000 + it * 100 + r + pos[r] / 16) * 16 + pos[r] % 16;
            if (out[r] != want)
                w->failures++;
        }
        memset(blk, (int)(it + w->seed), sizeof blk);
        kvb_copy_pair pr = {it % 16, 16 + it % 16};
        if (kvb_kv_buffer_write(b, pr.src, blk) || kvb_kv_buffer_copy_blocks(b, &pr, 1) ||
            kvb_kv_buffer_read(b, pr.dst, back) || memcmp(blk, back, sizeof blk))
            w->failures++;
    }
    kvb_kv_buffer_destroy(b);
    kvb_table_destroy(t);
    return NULL;
}

BOTH(two_threads_share_a_device)
{
    kvb_device *d = open_or_skip(kind);
    struct worker w[2] = {{d, 1, 0}, {d, 2, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(w[i].failures, 0, "worker %d: %d failures", i, w[i].failures);
    }
    cr_assert_eq(kvb_device_wait_idle(d), 0);
    kvb_device_close(d);
}

/* ------------------------------------------------------------------------ */
/* parity: cpu vs vulkan vs a model                                          */
/* ------------------------------------------------------------------------ */

static uint64_t rng_state;
static uint32_t rnd(void)
{
    return (uint32_t)(tu_xorshift64(&rng_state) >> 16);
}
static uint32_t rnd_below(uint32_t n)
{
    return n ? rnd() % n : 0;
}

/* The model: host view and device view of a table. */
struct model {
    uint32_t S, B, BS;
    int32_t *host, *devv; /* [S*B + S] */
    uint32_t *len;
};

static void model_init(struct model *m, uint32_t S, uint32_t B, uint32_t BS)
{
    m->S = S;
    m->B = B;
    m->BS = BS;
    m->host = calloc((size_t)S * B + S, sizeof(int32_t));
    m->devv = calloc((size_t)S * B + S, sizeof(int32_t));
    m->len = calloc(S, sizeof(uint32_t));
}

static void model_free(struct model *m)
{
    free(m->host);
    free(m->devv);
    free(m->len);
}

static void model_sync(struct model *m)
{
    memcpy(m->devv, m->host, ((size_t)m->S * m->B + m->S) * sizeof(int32_t));
}

#define NB 2 /* backends under test: 0 = cpu, 1 = vulkan */

static void both_rc(int rc[NB], int want, const char *what, int step)
{
    for (int k = 0; k < NB; k++)
        cr_assert_eq(rc[k], want, "step %d %s: backend %d returned %d, model says %d", step, what,
                     k, rc[k], want);
}

static void check_tables(kvb_table *t[NB], struct model *m, int step)
{
    int32_t *row = malloc(m->B * sizeof *row);
    for (uint32_t r = 0; r < m->S; r++)
        for (int k = 0; k < NB; k++) {
            cr_assert_eq(kvb_table_read_row(t[k], r, row, m->B), 0);
            cr_assert_eq(memcmp(row, m->devv + (size_t)r * m->B, m->B * sizeof *row), 0,
                         "step %d: backend %d row %u differs from the model", step, k, r);
            cr_assert_eq(kvb_table_row_len(t[k], r), m->len[r]);
        }
    int32_t *ctx = malloc(m->S * sizeof *ctx);
    for (int k = 0; k < NB; k++) {
        cr_assert_eq(kvb_table_read_context_lens(t[k], 0, m->S, ctx), 0);
        cr_assert_eq(memcmp(ctx, m->devv + (size_t)m->S * m->B, m->S * sizeof *ctx), 0,
                     "step %d: backend %d context lengths differ", step, k);
    }
    free(ctx);
    free(row);
}

static void parity_run(uint64_t seed, uint32_t S, uint32_t B, uint32_t BS, int steps)
{
    kvb_device *dev[NB] = {open_or_skip(KVB_DEVICE_CPU), open_or_skip(KVB_DEVICE_VULKAN)};
    kvb_table *t[NB];
    for (int k = 0; k < NB; k++)
        t[k] = mk_table(dev[k], S, B, BS);
    struct model m;
    model_init(&m, S, B, BS);
    rng_state = seed * 0x9E3779B97F4A7C15ull + 1;
    cr_log_info("parity seed %llu: %u x %u, block size %u", (unsigned long long)seed, S, B, BS);

    uint32_t *ids = malloc((B + 2) * sizeof *ids);
    const uint32_t MAXTOK = 3 * S + 64;
    uint32_t *rows = malloc(MAXTOK * sizeof *rows), *pos = malloc(MAXTOK * sizeof *pos);
    int64_t *out[NB] = {malloc((MAXTOK + 8) * 8), malloc((MAXTOK + 8) * 8)};
    int rc[NB];

    for (int step = 0; step < steps; step++) {
        uint32_t op = rnd_below(100);
        uint32_t r = rnd_below(S + (rnd_below(20) == 0)); /* sometimes out of range */
        if (op < 25) {                                    /* set_row */
            uint32_t n = rnd_below(B + 1) + (rnd_below(30) == 0);
            for (uint32_t i = 0; i < n; i++)
                ids[i] = rnd_below(8) == 0 ? rnd_below(4) : rnd_below(1u << 24);
            if (n && rnd_below(40) == 0)
                ids[rnd_below(n)] = 0x80000000u + rnd_below(5);
            int want = 0;
            if (r >= S || n > B)
                want = -ERANGE;
            else
                for (uint32_t i = 0; i < n; i++)
                    if (ids[i] > INT32_MAX)
                        want = -EINVAL;
            for (int k = 0; k < NB; k++)
                rc[k] = kvb_table_set_row(t[k], r, ids, n);
            both_rc(rc, want, "set_row", step);
            if (!want) {
                int32_t *row = m.host + (size_t)r * B;
                for (uint32_t i = 0; i < B; i++)
                    row[i] = i < n ? (int32_t)ids[i] : 0;
                m.len[r] = n;
            }
        } else if (op < 40) { /* append */
            uint32_t n = rnd_below(4);
            for (uint32_t i = 0; i < n; i++)
                ids[i] = rnd_below(1u << 20);
            int want = (r >= S || n > B - m.len[r]) ? -ERANGE : 0;
            for (int k = 0; k < NB; k++)
                rc[k] = kvb_table_append(t[k], r, ids, n);
            both_rc(rc, want, "append", step);
            if (!want) {
                for (uint32_t i = 0; i < n; i++)
                    m.host[(size_t)r * B + m.len[r] + i] = (int32_t)ids[i];
                m.len[r] += n;
            }
        } else if (op < 47) { /* clear */
            int want = r >= S ? -ERANGE : 0;
            for (int k = 0; k < NB; k++)
                rc[k] = kvb_table_clear_row(t[k], r);
            both_rc(rc, want, "clear_row", step);
            if (!want) {
                memset(m.host + (size_t)r * B, 0, B * sizeof(int32_t));
                m.len[r] = 0;
                m.host[(size_t)S * B + r] = 0;
            }
        } else if (op < 57) { /* move / swap */
            uint32_t r2 = rnd_below(4) == 0 ? r : rnd_below(S + (rnd_below(20) == 0));
            bool swap = rnd() & 1;
            int want = (r >= S || r2 >= S) ? -ERANGE : 0;
            for (int k = 0; k < NB; k++)
                rc[k] = swap ? kvb_table_swap_rows(t[k], r, r2) : kvb_table_move_row(t[k], r, r2);
            both_rc(rc, want, swap ? "swap_rows" : "move_row", step);
            if (!want && r != r2) {
                int32_t *a = m.host + (size_t)r * B, *b = m.host + (size_t)r2 * B;
                int32_t *ca = &m.host[(size_t)S * B + r], *cb = &m.host[(size_t)S * B + r2];
                if (swap) {
                    for (uint32_t i = 0; i < B; i++) {
                        int32_t x = a[i];
                        a[i] = b[i];
                        b[i] = x;
                    }
                    uint32_t l = m.len[r];
                    m.len[r] = m.len[r2];
                    m.len[r2] = l;
                    int32_t c = *ca;
                    *ca = *cb;
                    *cb = c;
                } else {
                    memcpy(b, a, B * sizeof(int32_t));
                    memset(a, 0, B * sizeof(int32_t));
                    m.len[r2] = m.len[r];
                    m.len[r] = 0;
                    *cb = *ca;
                    *ca = 0;
                }
            }
        } else if (op < 72) { /* context length */
            uint32_t len = rnd_below(30) == 0 ? 0x80000000u : rnd_below(B * BS + 1);
            int want = len > INT32_MAX ? -EINVAL : r >= S ? -ERANGE : 0;
            for (int k = 0; k < NB; k++)
                rc[k] = kvb_table_set_context_len(t[k], r, len);
            both_rc(rc, want, "set_context_len", step);
            if (!want)
                m.host[(size_t)S * B + r] = (int32_t)len;
        } else if (op < 82) { /* sync */
            for (int k = 0; k < NB; k++)
                rc[k] = kvb_table_sync(t[k]);
            both_rc(rc, 0, "sync", step);
            model_sync(&m);
        } else if (op < 95) { /* token batch */
            uint32_t n = rnd_below(5) == 0 ? 0 : 1 + rnd_below(MAXTOK);
            uint32_t padded = n + rnd_below(8);
            uint32_t filled = 0;
            for (uint32_t tries = 0; filled < n && tries < 4 * n + 16; tries++) {
                uint32_t rr = rnd_below(S);
                if (!m.len[rr])
                    continue;
                rows[filled] = rr;
                pos[filled] = rnd_below(m.len[rr] * BS);
                filled++;
            }
            n = filled;
            if (padded < n)
                padded = n;
            int want = 0;
            if (n && rnd_below(10) == 0) { /* one bad token */
                uint32_t i = rnd_below(n);
                if (rnd() & 1)
                    rows[i] = S + rnd_below(3);
                else
                    pos[i] = m.len[rows[i]] * BS + rnd_below(BS * 2);
                want = -ERANGE;
            }
            for (int k = 0; k < NB; k++) {
                memset(out[k], 0x11, (MAXTOK + 8) * 8);
                rc[k] = kvb_table_slot_mapping(t[k], rows, pos, n, padded, out[k]);
            }
            both_rc(rc, want, "slot_mapping", step);
            if (!want) {
                if (n)
                    model_sync(&m);
                for (uint32_t i = 0; i < n; i++) {
                    int64_t blk = (uint32_t)m.devv[(size_t)rows[i] * B + pos[i] / BS];
                    int64_t exp = blk * BS + pos[i] % BS;
                    for (int k = 0; k < NB; k++)
                        cr_assert_eq(out[k][i], exp, "step %d backend %d token %u", step, k, i);
                }
                for (uint32_t i = n; i < padded; i++)
                    for (int k = 0; k < NB; k++)
                        cr_assert_eq(out[k][i], -1);
                for (int k = 0; k < NB; k++)
                    cr_assert_eq(out[k][padded], 0x1111111111111111ll);
            }
        } else { /* compare device contents */
            check_tables(t, &m, step);
        }
    }
    for (int k = 0; k < NB; k++)
        cr_assert_eq(kvb_table_sync(t[k]), 0);
    model_sync(&m);
    check_tables(t, &m, steps);

    for (int k = 0; k < NB; k++) {
        kvb_table_destroy(t[k]);
        kvb_device_close(dev[k]);
        free(out[k]);
    }
    free(rows);
    free(pos);
    free(ids);
    model_free(&m);
}

Test(parity, tables_small_pow2)
{
    parity_run(1, 7, 5, 16, 3000);
}

Test(parity, tables_odd_block_size)
{
    parity_run(2, 33, 17, 12, 3000);
}

Test(parity, tables_wide)
{
    parity_run(3, 130, 200, 1, 1500);
}

Test(parity, tables_many_seeds)
{
    for (uint64_t s = 10; s < 16; s++)
        parity_run(s, 1 + (uint32_t)s % 9, 1 + (uint32_t)(s * 7) % 13, 1u << (s % 11), 600);
}

static void kv_parity(uint64_t seed, uint32_t nblocks, size_t bb, int steps)
{
    kvb_device *dev[NB] = {open_or_skip(KVB_DEVICE_CPU), open_or_skip(KVB_DEVICE_VULKAN)};
    kvb_kv_buffer *b[NB];
    for (int k = 0; k < NB; k++)
        cr_assert_eq(kvb_kv_buffer_create(dev[k], nblocks, bb, &b[k]), 0);
    rng_state = seed * 0x9E3779B97F4A7C15ull + 7;
    unsigned char *model = calloc(nblocks, bb), *buf = malloc(bb), *rd = malloc(bb);
    kvb_copy_pair *pairs = malloc(nblocks * sizeof *pairs);
    uint32_t *perm = malloc(nblocks * sizeof *perm);
    int rc[NB];
    for (int step = 0; step < steps; step++) {
        uint32_t op = rnd_below(10);
        if (op < 3) {
            uint32_t blk = rnd_below(nblocks);
            fill_block(buf, bb, rnd());
            for (int k = 0; k < NB; k++)
                cr_assert_eq(kvb_kv_buffer_write(b[k], blk, buf), 0);
            memcpy(model + (size_t)blk * bb, buf, bb);
        } else if (op < 8) {
            /* random permutation: first half sources, second half destinations */
            for (uint32_t i = 0; i < nblocks; i++)
                perm[i] = i;
            for (uint32_t i = nblocks - 1; i > 0; i--) {
                uint32_t j = rnd_below(i + 1), x = perm[i];
                perm[i] = perm[j];
                perm[j] = x;
            }
            uint32_t half = nblocks / 2, n = rnd_below(half + 1);
            for (uint32_t i = 0; i < n; i++) /* sources may repeat */
                pairs[i] =
                    (kvb_copy_pair){perm[rnd_below(2) ? i : rnd_below(half)], perm[half + i]};
            int want = 0;
            if (n && rnd_below(4) == 0) {
                uint32_t i = rnd_below(n);
                switch (rnd_below(3)) {
                case 0:
                    pairs[i].dst = pairs[rnd_below(n)].src;
                    break;
                case 1: /* a destination twice (or, alone, its own source) */
                    if (n >= 2)
                        pairs[i].dst = pairs[(i + 1 + rnd_below(n - 1)) % n].dst;
                    else
                        pairs[i].dst = pairs[i].src;
                    break;
                default:
                    pairs[i].src = nblocks + rnd_below(3);
                }
                want = -EINVAL;
            }
            for (int k = 0; k < NB; k++)
                rc[k] = kvb_kv_buffer_copy_blocks(b[k], pairs, n);
            both_rc(rc, want, "copy_blocks", step);
            if (!want)
                for (uint32_t i = 0; i < n; i++)
                    memcpy(model + (size_t)pairs[i].dst * bb, model + (size_t)pairs[i].src * bb,
                           bb);
        } else {
            uint32_t blk = rnd_below(nblocks);
            for (int k = 0; k < NB; k++) {
                cr_assert_eq(kvb_kv_buffer_read(b[k], blk, rd), 0);
                cr_assert_eq(memcmp(rd, model + (size_t)blk * bb, bb), 0,
                             "step %d backend %d block %u", step, k, blk);
            }
        }
    }
    for (uint32_t blk = 0; blk < nblocks; blk++)
        for (int k = 0; k < NB; k++) {
            cr_assert_eq(kvb_kv_buffer_read(b[k], blk, rd), 0);
            cr_assert_eq(memcmp(rd, model + (size_t)blk * bb, bb), 0, "final: backend %d block %u",
                         k, blk);
        }
    for (int k = 0; k < NB; k++) {
        kvb_kv_buffer_destroy(b[k]);
        kvb_device_close(dev[k]);
    }
    free(model);
    free(buf);
    free(rd);
    free(pairs);
    free(perm);
}

Test(parity, kv_copies)
{
    kv_parity(5, 48, 256, 400);
}

Test(parity, kv_copies_odd_block_bytes)
{
    kv_parity(6, 31, 150, 300);
}

Test(parity, kv_copies_chunked)
{
    /* force several device allocations (chunks of 3 blocks): the copy path across chunks */
    setenv("KVBLOCK_VULKAN_MAX_ALLOC", "1000", 1);
    kv_parity(7, 40, 300, 400);
}
