// The public headers compile as C++ (extern "C", no C-only constructs outside
// #ifndef __cplusplus), and kvb_release resolves through overloads.
#include <kvblock.h>
#include <kvblock/device.h>

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
