/*
 * test_metrics.c - stats snapshot, Prometheus text exposition, memory accounting.
 */
#include "testutil.h"

Test(metrics, prometheus_text_has_every_series_and_sizes_like_snprintf)
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 8;
    cfg.name = "gpu \"0\"\n";
    kvb_pool *p = tu_pool_cfg(&cfg);
    kvb_mutable m[3];
    cr_assert_eq(kvb_pool_allocate(p, 3, m, NULL, NULL), 0);
    kvb_mutable_release(&m[0]);
    int need = kvb_pool_metrics_text(p, NULL, 0);
    cr_assert_gt(need, 0);
    char *buf = malloc((size_t)need + 1);
    cr_assert_eq(kvb_pool_metrics_text(p, buf, (size_t)need + 1), need);
    cr_expect_eq(strlen(buf), (size_t)need);
    /* the label value is escaped */
    cr_expect_not_null(
        strstr(buf, "kvblock_blocks{pool=\"gpu \\\"0\\\"\\n\",state=\"mutable\"} 2\n"), "%s", buf);
    cr_expect_not_null(strstr(buf, "state=\"reset\"} 6\n"));
    cr_expect_not_null(strstr(buf, "kvblock_allocations_total{pool=\"gpu \\\"0\\\"\\n\"} 3\n"));
    cr_expect_not_null(strstr(buf, "# TYPE kvblock_allocations_total counter\n"));
    cr_expect_not_null(strstr(buf, "kvblock_lock_acquisitions_total"));
    cr_expect_not_null(strstr(buf, "kvblock_bookkeeping_bytes{pool="));
    cr_expect_not_null(strstr(buf, "component=\"total\"}"));
    /* every non-comment line is "name{labels} value" */
    int lines = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        lines++;
        cr_expect_not_null(strchr(line, '{'), "%s", line);
        cr_expect_not_null(strstr(line, "} "), "%s", line);
    }
    cr_expect_gt(lines, 25);
    /* truncation: returns the full length, writes a NUL-terminated prefix */
    char small[32];
    cr_expect_eq(kvb_pool_metrics_text(p, small, sizeof small), need);
    cr_expect_eq(strlen(small), sizeof small - 1);
    cr_expect_eq(kvb_pool_metrics_text(NULL, small, sizeof small), -EINVAL);
    cr_expect_eq(kvb_pool_metrics_text(p, NULL, 10), -EINVAL);
    free(buf);
    kvb_mutable_release(&m[1]);
    kvb_mutable_release(&m[2]);
    tu_finish(p);
}

Test(metrics, stats_gauges_and_peak)
{
    kvb_pool *p = tu_pool(8, KVB_EVICT_LRU);
    kvb_mutable m[5];
    cr_assert_eq(kvb_pool_allocate(p, 5, m, NULL, NULL), 0);
    for (int i = 0; i < 5; i++)
        kvb_mutable_release(&m[i]);
    cr_assert_eq(kvb_pool_allocate(p, 2, m, NULL, NULL), 0);
    kvb_stats s;
    cr_assert_eq(kvb_pool_stats(p, &s), 0);
    cr_expect_eq(s.block_count, 8);
    cr_expect_eq(s.mutable_, 2);
    cr_expect_eq(s.reset, 6);
    cr_expect_eq(s.peak_in_use, 5);
    cr_expect_eq(s.allocations, 7);
    cr_expect_gt(s.lock_acquisitions, 0);
    cr_expect_eq(kvb_pool_stats(p, NULL), -EINVAL);
    kvb_mutable_release(&m[0]);
    kvb_mutable_release(&m[1]);
    tu_finish(p);
}

Test(metrics, memory_accounting_per_component)
{
    kvb_pool *p = tu_pool(1000, KVB_EVICT_LRU);
    kvb_memory_stats m;
    cr_assert_eq(kvb_pool_memory(p, &m), 0);
    cr_expect_eq(m.slots, 1000 * 32);
    cr_expect_geq(m.hash_index, 1000 * 7);
    cr_expect_lt(m.hash_index, 1000 * 8);
    cr_expect_geq(m.backend, 1000 * 8, "lru: two links per block");
    cr_expect_eq(m.sketch, 0, "lru keeps no sketch");
    cr_expect_eq(m.total, m.slots + m.hash_index + m.backend + m.sketch + m.pool);
    cr_expect_lt(m.total, 1000 * 48 + 2048, "<= 48 bytes per block plus a fixed part");
    cr_expect_eq(kvb_pool_memory(p, NULL), -EINVAL);
    tu_finish(p);
}
