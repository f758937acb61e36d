// The public headers from C++: all of them in one translation unit (each alone
// is compiled by make check-headers), extern "C" linkage of the API, and
// kvb_release resolving through the C++ overloads. Built and run by
// make check-headers (this tree) and make check-install (the installed headers
// and libkvblock.so).
#include <kvblock.h>
#include <kvblock/device.h>
#include <kvblock/events.h>
#include <kvblock/inactive.h>
#include <kvblock/index.h>
#include <kvblock/publisher.h>
#include <kvblock/redis.h>
#include <kvblock/registry.h>
#include <kvblock/seq.h>
#include <kvblock/subscriber.h>

int main()
{
    kvb_pool_config cfg;
    kvb_pool_config_init(&cfg);
    cfg.block_count = 4;
    kvb_pool *p = nullptr;
    if (kvb_pool_create(&cfg, &p) != 0)
        return 1;
    kvb_mutable m;
    if (kvb_pool_allocate(p, 1, &m, nullptr, nullptr) != 0)
        return 1;
    if (kvb_release(&m) != 0)
        return 1;
    return kvb_pool_destroy(p);
}
