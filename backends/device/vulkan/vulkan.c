/*
 * vulkan.c - the Vulkan device backend (ops contract: lib/device_backend.h).
 *
 * Device. One instance and one logical device per kvb_device. The physical
 * device is the best by type (discrete > integrated > virtual > CPU, first on
 * ties; KVBLOCK_VULKAN_DEVICE=<index> overrides), so Mesa's lavapipe is used
 * when it is the only one; for KVB_DEVICE_AUTO a CPU implementation is
 * refused (the cpu backend beats a software rasteriser's compute). One queue
 * from a compute-capable family (a compute-only family preferred). Created at
 * open: one descriptor-set layout (0 table image, 1 tokens, 2 slots, 3 the
 * table's staging ring), one pipeline layout (24 bytes of push constants) and
 * three pipelines: slot mapping for power-of-two block sizes, slot mapping
 * with a division, and the scatter upload. The workgroup size is a
 * specialisation constant (min(256, device limits)).
 *
 * Submissions. A ring of KVB_VK_RING command buffers, each with a fence, and a
 * serial number per submission. Taking a ring slot waits for that slot's
 * previous submission, so a serial whose slot has been reused is complete.
 * Every command buffer starts with one global memory barrier (earlier transfer
 * and compute writes -> this buffer's transfer and compute accesses): commands
 * of different submissions on one queue are not ordered otherwise. The device
 * mutex guards the queue, the command pool and the ring (Vulkan requires
 * external synchronisation for all three); a table or a KV buffer itself is
 * used by one thread at a time (the public contract), so their own state needs
 * no lock. Staging space is always reserved before the device lock is taken
 * (reserving may wait for a submission, which takes the lock).
 *
 * Tables. The image (block table + context lengths) lives in a device-local
 * buffer. kvb_table_sync copies the dirty spans into the table's staging ring
 * (host-visible, coherent) and records them in one submission, no wait: long
 * spans as regions of one vkCmdCopyBuffer, and, when there are many short
 * spans (one block appended to each row), those as (index, value) pairs
 * written by the scatter kernel (lavapipe pays ~0.2 us per copy region: 4096
 * regions took 0.85 ms, the scatter 0.1 ms). The staging ring frees space as
 * the submissions that read it complete. Slot mapping writes rows and
 * positions into a host-visible token buffer, records the pending upload (if
 * any), a barrier, the dispatches and a barrier to the host, submits and
 * waits; the int64 results are two u32 words per token (no shaderInt64). The
 * descriptor set of a table is written at create; the token buffers start at
 * max(max_seqs, 4096) tokens and only grow (doubling), rewriting the set
 * then, after waiting for the table's work, so at most log2 times.
 *
 * KV buffers are never bound to a shader: writes, reads and block copies are
 * vkCmdCopyBuffer, which has no range limit, and a buffer larger than one
 * device allocation (maxMemoryAllocationSize, capped at 1 GiB;
 * KVBLOCK_VULKAN_MAX_ALLOC lowers it for tests) is split into chunks of whole
 * blocks. A copy batch is grouped by (source chunk, destination chunk) into
 * one vkCmdCopyBuffer each, all in one submission.
 *
 * Limits: a table image must fit maxStorageBufferRange (else -E2BIG at
 * create); a slot-mapping batch larger than maxStorageBufferRange / 8 tokens
 * is split into several submissions. KVBLOCK_VULKAN_MAX_RANGE lowers the range
 * for tests.
 */
#include "device_backend.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vulkan/vulkan.h>
#ifdef KVB_TESTING
#include <dlfcn.h>
#endif

#include "scatter.spv.h"
#include "slot_mapping.spv.h"

#define KVB_VK_RING        4   /* command buffers (submissions) in flight */
#define KVB_VK_ALIGN       256 /* staging allocations */
#define KVB_VK_STAGE_Q     64  /* staging allocations in flight per table */
#define KVB_VK_MIN_TOKENS  4096
#define KVB_VK_CHUNK_LIMIT (1ull << 30)
/* Upload spans of at most this many words go through the scatter kernel... */
#define KVB_VK_SCATTER_SPAN 8
/* ...when there are at least this many of them (else copy regions only). */
#define KVB_VK_SCATTER_MIN 64

struct kvb_vk_cmd {
    VkCommandBuffer cb;
    VkFence fence;
    uint64_t serial; /* last submission recorded in this slot; 0: never used */
};

struct kvb_vk_dev {
    VkInstance inst;
    VkPhysicalDevice phys;
    VkDevice dev;
    VkQueue queue;
    uint32_t qfam;
    VkPhysicalDeviceMemoryProperties mem;
    VkDeviceSize max_range; /* maxStorageBufferRange */
    VkDeviceSize max_alloc; /* largest single allocation we make (KV chunks) */
    uint32_t max_groups;    /* maxComputeWorkGroupCount[0] */
    uint32_t local_size;
    VkDescriptorSetLayout dsl;
    VkPipelineLayout layout;
    VkPipeline slot_pow2, slot_div; /* slot mapping: block size a power of two or not */
    VkPipeline scatter;
    VkCommandPool cmd_pool;
    pthread_mutex_t lock; /* guards queue, cmd_pool, ring, next_serial, lost */
    struct kvb_vk_cmd ring[KVB_VK_RING];
    uint64_t next_serial; /* serial of the next submission, starts at 1 */
    bool lost;            /* VK_ERROR_DEVICE_LOST seen: every call is -EIO */
};

struct kvb_vk_buf {
    VkBuffer buf;
    VkDeviceMemory mem;
    VkDeviceSize size;
    unsigned char *map; /* host-visible buffers only */
};

/* Staging ring: live allocations form one circular run [q[qh].off, head). */
struct kvb_vk_stage {
    struct kvb_vk_buf b;
    VkDeviceSize head;
    struct {
        VkDeviceSize off;
        uint64_t serial;
    } q[KVB_VK_STAGE_Q];
    uint32_t qh, qn;
};

struct kvb_vk_table {
    struct kvb_vk_buf img; /* device-local image */
    struct kvb_vk_stage stage;
    struct kvb_vk_buf tok;   /* host-visible: rows then pos */
    struct kvb_vk_buf slots; /* host-visible: uvec2 per token */
    uint32_t tok_cap;        /* tokens the two buffers hold */
    VkDescriptorPool dpool;
    VkDescriptorSet set;
    VkBufferCopy *regions; /* scratch, one per possible span */
    uint64_t last_serial;  /* last submission that used this table */
};

struct kvb_vk_kv {
    uint32_t nchunks, chunk_blocks;
    struct kvb_vk_buf *chunks;
    struct kvb_vk_buf stage; /* host-visible, one block */
    uint64_t last_serial;    /* last submission that used this buffer */
};

struct kvb_vk_pc {
    uint32_t num_tokens, padded, block_size, max_blocks, first, shift;
};

struct kvb_vk_scatter_pc {
    uint32_t base, count;
};

static int kvb_vk_err(VkResult r)
{
    switch (r) {
    case VK_SUCCESS:
        return 0;
    case VK_ERROR_OUT_OF_HOST_MEMORY:
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
    case VK_ERROR_TOO_MANY_OBJECTS:
    case VK_ERROR_FRAGMENTED_POOL:
    case VK_ERROR_OUT_OF_POOL_MEMORY:
        return -ENOMEM;
    default:
        return -EIO;
    }
}

static inline struct kvb_vk_dev *kvb_vk(kvb_device *dev)
{
    return dev->impl;
}

/* ------------------------------------------------------------------------ */
/* Submissions                                                              */
/* ------------------------------------------------------------------------ */

static void kvb_vk_barrier(VkCommandBuffer cb, VkPipelineStageFlags src, VkAccessFlags src_access,
                           VkPipelineStageFlags dst, VkAccessFlags dst_access)
{
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = src_access,
        .dstAccessMask = dst_access,
    };
    vkCmdPipelineBarrier(cb, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

#define KVB_VK_STAGES (VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT)
#define KVB_VK_WRITES (VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_SHADER_WRITE_BIT)
#define KVB_VK_ACCESS                                                                              \
    (VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_SHADER_READ_BIT |      \
     VK_ACCESS_SHADER_WRITE_BIT)

/* Wait for ring slot c's submission; lock held. */
static int kvb_vk_wait_slot_locked(kvb_device *dev, struct kvb_vk_cmd *c)
{
    struct kvb_vk_dev *d = kvb_vk(dev);
    if (c->serial == 0)
        return 0;
    if (vkGetFenceStatus(d->dev, c->fence) == VK_SUCCESS)
        return 0;
    VkResult r = vkWaitForFences(d->dev, 1, &c->fence, VK_TRUE, UINT64_MAX);
    KVB__COUNT(dev, waits, 1);
    if (r != VK_SUCCESS) {
        d->lost = true;
        return -EIO;
    }
    return 0;
}

/* Take the next ring slot and start recording. On success the device lock is held
 * until kvb_vk_submit. */
static int kvb_vk_begin(kvb_device *dev, struct kvb_vk_cmd **out)
{
    struct kvb_vk_dev *d = kvb_vk(dev);
    pthread_mutex_lock(&d->lock);
    if (d->lost)
        goto fail;
    struct kvb_vk_cmd *c = &d->ring[d->next_serial % KVB_VK_RING];
    if (kvb_vk_wait_slot_locked(dev, c))
        goto fail;
    if (vkResetFences(d->dev, 1, &c->fence) != VK_SUCCESS ||
        vkResetCommandBuffer(c->cb, 0) != VK_SUCCESS)
        goto fail;
    c->serial = 0; /* free until submitted */
    VkCommandBufferBeginInfo bi = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
        .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
    };
    if (vkBeginCommandBuffer(c->cb, &bi) != VK_SUCCESS)
        goto fail;
    kvb_vk_barrier(c->cb, KVB_VK_STAGES, KVB_VK_WRITES, KVB_VK_STAGES, KVB_VK_ACCESS);
    *out = c;
    return 0;
fail:
    pthread_mutex_unlock(&d->lock);
    return -EIO;
}

/* End recording and submit; releases the lock. *serial receives the submission's serial. */
static int kvb_vk_submit(kvb_device *dev, struct kvb_vk_cmd *c, uint64_t *serial)
{
    struct kvb_vk_dev *d = kvb_vk(dev);
    int rc = -EIO;
    if (vkEndCommandBuffer(c->cb) == VK_SUCCESS) {
        VkSubmitInfo si = {
            .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
            .commandBufferCount = 1,
            .pCommandBuffers = &c->cb,
        };
        VkResult r = vkQueueSubmit(d->queue, 1, &si, c->fence);
        if (r == VK_SUCCESS) {
            c->serial = d->next_serial++;
            *serial = c->serial;
            rc = 0;
        } else {
            if (r == VK_ERROR_DEVICE_LOST)
                d->lost = true;
            rc = kvb_vk_err(r);
        }
    }
    pthread_mutex_unlock(&d->lock);
    if (rc == 0)
        KVB__COUNT(dev, submissions, 1);
    return rc;
}

/* Whether submission `serial` has completed (wait: block until it has). */
static int kvb_vk_serial_done(kvb_device *dev, uint64_t serial, bool wait, bool *done)
{
    struct kvb_vk_dev *d = kvb_vk(dev);
    int rc = 0;
    *done = true;
    if (serial == 0)
        return 0;
    pthread_mutex_lock(&d->lock);
    struct kvb_vk_cmd *c = &d->ring[serial % KVB_VK_RING];
    if (c->serial == serial) { /* else: slot reused, so the submission completed */
        if (wait)
            rc = kvb_vk_wait_slot_locked(dev, c);
        else
            *done = vkGetFenceStatus(d->dev, c->fence) == VK_SUCCESS;
    }
    pthread_mutex_unlock(&d->lock);
    return rc;
}

static int kvb_vk_wait(kvb_device *dev, uint64_t serial)
{
    bool done;
    return kvb_vk_serial_done(dev, serial, true, &done);
}

static int kvb_vk_wait_idle(kvb_device *dev)
{
    struct kvb_vk_dev *d = kvb_vk(dev);
    int rc = 0;
    pthread_mutex_lock(&d->lock);
    for (int i = 0; i < KVB_VK_RING && rc == 0; i++)
        rc = kvb_vk_wait_slot_locked(dev, &d->ring[i]);
    if (d->lost)
        rc = -EIO;
    pthread_mutex_unlock(&d->lock);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Buffers                                                                  */
/* ------------------------------------------------------------------------ */

static int kvb_vk_memtype(const struct kvb_vk_dev *d, uint32_t bits, VkMemoryPropertyFlags req,
                          VkMemoryPropertyFlags pref)
{
    for (int pass = 0; pass < 2; pass++) {
        VkMemoryPropertyFlags want = pass == 0 ? (req | pref) : req;
        for (uint32_t i = 0; i < d->mem.memoryTypeCount; i++)
            if ((bits & (1u << i)) && (d->mem.memoryTypes[i].propertyFlags & want) == want)
                return (int)i;
    }
    return -1;
}

#define KVB_VK_HOST (VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT)

static void kvb_vk_buf_destroy(struct kvb_vk_dev *d, struct kvb_vk_buf *b)
{
    if (b->map)
        vkUnmapMemory(d->dev, b->mem);
    if (b->buf)
        vkDestroyBuffer(d->dev, b->buf, NULL);
    if (b->mem)
        vkFreeMemory(d->dev, b->mem, NULL);
    memset(b, 0, sizeof *b);
}

/* req includes HOST_VISIBLE: the buffer is mapped persistently. */
static int kvb_vk_buf_create(struct kvb_vk_dev *d, VkDeviceSize size, VkBufferUsageFlags usage,
                             VkMemoryPropertyFlags req, VkMemoryPropertyFlags pref,
                             struct kvb_vk_buf *b)
{
    memset(b, 0, sizeof *b);
    b->size = size;
    VkBufferCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = size,
        .usage = usage,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    VkResult r = vkCreateBuffer(d->dev, &ci, NULL, &b->buf);
    if (r != VK_SUCCESS)
        return kvb_vk_err(r);
    VkMemoryRequirements mr;
    vkGetBufferMemoryRequirements(d->dev, b->buf, &mr);
    int type = kvb_vk_memtype(d, mr.memoryTypeBits, req, pref);
    if (type < 0) {
        kvb_vk_buf_destroy(d, b);
        return -ENOMEM;
    }
    VkMemoryAllocateInfo ai = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
        .allocationSize = mr.size,
        .memoryTypeIndex = (uint32_t)type,
    };
    r = vkAllocateMemory(d->dev, &ai, NULL, &b->mem);
    if (r == VK_SUCCESS)
        r = vkBindBufferMemory(d->dev, b->buf, b->mem, 0);
    if (r == VK_SUCCESS && (req & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT))
        r = vkMapMemory(d->dev, b->mem, 0, VK_WHOLE_SIZE, 0, (void **)&b->map);
    if (r != VK_SUCCESS) {
        kvb_vk_buf_destroy(d, b);
        return kvb_vk_err(r);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Staging ring                                                             */
/* ------------------------------------------------------------------------ */

static int kvb_vk_stage_reclaim(kvb_device *dev, struct kvb_vk_stage *s, bool wait_one)
{
    while (s->qn) {
        bool done;
        int rc = kvb_vk_serial_done(dev, s->q[s->qh].serial, wait_one, &done);
        if (rc)
            return rc;
        if (!done)
            break;
        wait_one = false;
        s->qh = (s->qh + 1) % KVB_VK_STAGE_Q;
        s->qn--;
    }
    if (s->qn == 0)
        s->head = 0;
    return 0;
}

/* Reserve size bytes; the caller records the submission with kvb_vk_stage_commit. */
static int kvb_vk_stage_alloc(kvb_device *dev, struct kvb_vk_stage *s, VkDeviceSize size,
                              VkDeviceSize *off)
{
    const VkDeviceSize cap = s->b.size;
    size = (size + KVB_VK_ALIGN - 1) & ~(VkDeviceSize)(KVB_VK_ALIGN - 1);
    if (size > cap)
        return -E2BIG; /* cannot happen: the ring holds a whole image */
    bool wait = false;
    for (;;) {
        int rc = kvb_vk_stage_reclaim(dev, s, wait);
        if (rc)
            return rc;
        wait = true;
        if (s->qn == 0) {
            *off = 0;
            return 0;
        }
        if (s->qn == KVB_VK_STAGE_Q)
            continue;
        VkDeviceSize tail = s->q[s->qh].off;
        if (s->head > tail) { /* live run [tail, head) */
            if (cap - s->head >= size) {
                *off = s->head;
                return 0;
            }
            if (tail > size) { /* strictly: head never catches up with tail */
                *off = 0;
                return 0;
            }
        } else if (tail - s->head > size) { /* wrapped: live [tail, cap) + [0, head) */
            *off = s->head;
            return 0;
        }
    }
}

static void kvb_vk_stage_commit(struct kvb_vk_stage *s, VkDeviceSize off, VkDeviceSize size,
                                uint64_t serial)
{
    size = (size + KVB_VK_ALIGN - 1) & ~(VkDeviceSize)(KVB_VK_ALIGN - 1);
    uint32_t i = (s->qh + s->qn) % KVB_VK_STAGE_Q;
    s->q[i].off = off;
    s->q[i].serial = serial;
    s->qn++;
    s->head = off + size;
}

/* ------------------------------------------------------------------------ */
/* Device                                                                   */
/* ------------------------------------------------------------------------ */

static int kvb_vk_type_rank(VkPhysicalDeviceType t)
{
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
        return 4;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
        return 3;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
        return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
        return 1;
    default:
        return 0;
    }
}

/* Compute-capable queue family, a compute-only one preferred; -1 when none. */
static int kvb_vk_queue_family(VkPhysicalDevice p)
{
    uint32_t n = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(p, &n, NULL);
    VkQueueFamilyProperties props[32];
    if (n > 32)
        n = 32;
    vkGetPhysicalDeviceQueueFamilyProperties(p, &n, props);
    int any = -1;
    for (uint32_t i = 0; i < n; i++) {
        if (!(props[i].queueFlags & VK_QUEUE_COMPUTE_BIT) || props[i].queueCount == 0)
            continue;
        if (!(props[i].queueFlags & VK_QUEUE_GRAPHICS_BIT))
            return (int)i;
        if (any < 0)
            any = (int)i;
    }
    return any;
}

static void kvb_vk_close(kvb_device *dev)
{
    struct kvb_vk_dev *d = kvb_vk(dev);
    if (!d)
        return;
    if (d->dev) {
        vkDeviceWaitIdle(d->dev);
        for (int i = 0; i < KVB_VK_RING; i++)
            if (d->ring[i].fence)
                vkDestroyFence(d->dev, d->ring[i].fence, NULL);
        if (d->cmd_pool)
            vkDestroyCommandPool(d->dev, d->cmd_pool, NULL);
        if (d->slot_pow2)
            vkDestroyPipeline(d->dev, d->slot_pow2, NULL);
        if (d->slot_div)
            vkDestroyPipeline(d->dev, d->slot_div, NULL);
        if (d->scatter)
            vkDestroyPipeline(d->dev, d->scatter, NULL);
        if (d->layout)
            vkDestroyPipelineLayout(d->dev, d->layout, NULL);
        if (d->dsl)
            vkDestroyDescriptorSetLayout(d->dev, d->dsl, NULL);
        vkDestroyDevice(d->dev, NULL);
    }
    if (d->inst)
        vkDestroyInstance(d->inst, NULL);
    pthread_mutex_destroy(&d->lock);
    free(d);
    dev->impl = NULL;
}

static int kvb_vk_pick(struct kvb_vk_dev *d, bool require_gpu)
{
    uint32_t n = 0;
    if (vkEnumeratePhysicalDevices(d->inst, &n, NULL) != VK_SUCCESS || n == 0)
        return -ENODEV;
    VkPhysicalDevice devs[16];
    if (n > 16)
        n = 16;
    if (vkEnumeratePhysicalDevices(d->inst, &n, devs) < 0)
        return -ENODEV;
    const char *env = getenv("KVBLOCK_VULKAN_DEVICE");
    int forced = env && *env ? atoi(env) : -1;
    int best = -1, best_rank = -1;
    for (uint32_t i = 0; i < n; i++) {
        VkPhysicalDeviceProperties p;
        vkGetPhysicalDeviceProperties(devs[i], &p);
        if (p.apiVersion < VK_API_VERSION_1_1 || kvb_vk_queue_family(devs[i]) < 0)
            continue;
        int rank = kvb_vk_type_rank(p.deviceType);
        if (forced >= 0 ? (int)i == forced : rank > best_rank) {
            best = (int)i;
            best_rank = rank;
        }
    }
    if (best < 0)
        return -ENODEV;
    if (require_gpu && best_rank < 2)
        return -ENODEV;
    d->phys = devs[best];
    d->qfam = (uint32_t)kvb_vk_queue_family(d->phys);
    return 0;
}

static int kvb_vk_make_pipeline(struct kvb_vk_dev *d, const uint32_t *code, size_t size,
                                uint32_t pow2, VkPipeline *out)
{
    VkShaderModuleCreateInfo sci = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
        .codeSize = size,
        .pCode = code,
    };
    VkShaderModule mod;
    VkResult r = vkCreateShaderModule(d->dev, &sci, NULL, &mod);
    if (r != VK_SUCCESS)
        return kvb_vk_err(r);
    /* constant 0: workgroup size; constant 1: POW2 (slot mapping only; a VkBool32) */
    const uint32_t data[2] = {d->local_size, pow2};
    const VkSpecializationMapEntry me[2] = {
        {.constantID = 0, .offset = 0, .size = sizeof(uint32_t)},
        {.constantID = 1, .offset = sizeof(uint32_t), .size = sizeof(uint32_t)},
    };
    VkSpecializationInfo spec = {
        .mapEntryCount = 2,
        .pMapEntries = me,
        .dataSize = sizeof data,
        .pData = data,
    };
    VkComputePipelineCreateInfo pci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage =
            {
                .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                .module = mod,
                .pName = "main",
                .pSpecializationInfo = &spec,
            },
        .layout = d->layout,
    };
    r = vkCreateComputePipelines(d->dev, VK_NULL_HANDLE, 1, &pci, NULL, out);
    vkDestroyShaderModule(d->dev, mod, NULL);
    if (r != VK_SUCCESS) {
        *out = VK_NULL_HANDLE;
        return kvb_vk_err(r);
    }
    return 0;
}

/* Descriptor-set layout (0 image, 1 tokens, 2 slots, 3 staging ring), one pipeline
 * layout with a 24-byte push-constant range, and the three pipelines. */
static int kvb_vk_pipeline(struct kvb_vk_dev *d)
{
    VkDescriptorSetLayoutBinding b[4];
    for (uint32_t i = 0; i < 4; i++)
        b[i] = (VkDescriptorSetLayoutBinding){
            .binding = i,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .descriptorCount = 1,
            .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        };
    VkDescriptorSetLayoutCreateInfo dci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .bindingCount = 4,
        .pBindings = b,
    };
    VkResult r = vkCreateDescriptorSetLayout(d->dev, &dci, NULL, &d->dsl);
    if (r != VK_SUCCESS)
        return kvb_vk_err(r);
    VkPushConstantRange pcr = {
        .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        .offset = 0,
        .size = sizeof(struct kvb_vk_pc),
    };
    VkPipelineLayoutCreateInfo lci = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
        .setLayoutCount = 1,
        .pSetLayouts = &d->dsl,
        .pushConstantRangeCount = 1,
        .pPushConstantRanges = &pcr,
    };
    r = vkCreatePipelineLayout(d->dev, &lci, NULL, &d->layout);
    if (r != VK_SUCCESS)
        return kvb_vk_err(r);
    int rc = kvb_vk_make_pipeline(d, slot_mapping, sizeof slot_mapping, VK_TRUE, &d->slot_pow2);
    if (!rc)
        rc = kvb_vk_make_pipeline(d, slot_mapping, sizeof slot_mapping, VK_FALSE, &d->slot_div);
    if (!rc)
        rc = kvb_vk_make_pipeline(d, scatter, sizeof scatter, VK_FALSE, &d->scatter);
    return rc;
}

static int kvb_vk_open(kvb_device *dev, bool require_gpu)
{
#ifdef KVB_TESTING
    /* Test builds: keep lavapipe mapped after vkDestroyInstance so that LSan can
     * symbolise (and does not misreport) the driver's allocations (TOOLING.md). */
    (void)dlopen("libvulkan_lvp.so", RTLD_NOW | RTLD_NODELETE);
#endif
    uint32_t api = 0;
    if (vkEnumerateInstanceVersion(&api) != VK_SUCCESS || api < VK_API_VERSION_1_1)
        return -ENODEV;
    struct kvb_vk_dev *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    pthread_mutex_init(&d->lock, NULL);
    d->next_serial = 1;
    dev->impl = d;

    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "kvblock",
        .pEngineName = "kvblock",
        .apiVersion = VK_API_VERSION_1_1,
    };
    VkInstanceCreateInfo ici = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .pApplicationInfo = &app,
    };
    int rc = -ENODEV;
    VkResult r = vkCreateInstance(&ici, NULL, &d->inst);
    if (r != VK_SUCCESS) {
        d->inst = VK_NULL_HANDLE;
        rc = (r == VK_ERROR_OUT_OF_HOST_MEMORY) ? -ENOMEM : -ENODEV;
        goto fail;
    }
    if ((rc = kvb_vk_pick(d, require_gpu)))
        goto fail;

    VkPhysicalDeviceMaintenance3Properties m3 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES,
    };
    VkPhysicalDeviceProperties2 p2 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
        .pNext = &m3,
    };
    vkGetPhysicalDeviceProperties2(d->phys, &p2);
    const VkPhysicalDeviceLimits *lim = &p2.properties.limits;
    d->max_range = lim->maxStorageBufferRange;
    d->max_groups = lim->maxComputeWorkGroupCount[0];
    d->local_size = 256;
    if (d->local_size > lim->maxComputeWorkGroupInvocations)
        d->local_size = lim->maxComputeWorkGroupInvocations;
    if (d->local_size > lim->maxComputeWorkGroupSize[0])
        d->local_size = lim->maxComputeWorkGroupSize[0];
    d->max_alloc = m3.maxMemoryAllocationSize ? m3.maxMemoryAllocationSize : KVB_VK_CHUNK_LIMIT;
    if (d->max_alloc > KVB_VK_CHUNK_LIMIT)
        d->max_alloc = KVB_VK_CHUNK_LIMIT;
    /* testing knob: a smaller storage-buffer range exercises the split paths */
    const char *rng_env = getenv("KVBLOCK_VULKAN_MAX_RANGE");
    if (rng_env && *rng_env) {
        unsigned long long v = strtoull(rng_env, NULL, 0);
        if (v >= 4096 && v < d->max_range)
            d->max_range = v;
    }
    const char *lim_env = getenv("KVBLOCK_VULKAN_MAX_ALLOC");
    if (lim_env && *lim_env) {
        unsigned long long v = strtoull(lim_env, NULL, 0);
        if (v > 0 && v < d->max_alloc)
            d->max_alloc = v;
    }
    vkGetPhysicalDeviceMemoryProperties(d->phys, &d->mem);
    snprintf(dev->name, sizeof dev->name, "vulkan: %.200s", p2.properties.deviceName);

    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
        .queueFamilyIndex = d->qfam,
        .queueCount = 1,
        .pQueuePriorities = &prio,
    };
    VkDeviceCreateInfo dci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
        .queueCreateInfoCount = 1,
        .pQueueCreateInfos = &qci,
    };
    r = vkCreateDevice(d->phys, &dci, NULL, &d->dev);
    if (r != VK_SUCCESS) {
        d->dev = VK_NULL_HANDLE;
        rc = r == VK_ERROR_OUT_OF_HOST_MEMORY ? -ENOMEM : -ENODEV;
        goto fail;
    }
    vkGetDeviceQueue(d->dev, d->qfam, 0, &d->queue);
    if ((rc = kvb_vk_pipeline(d)))
        goto fail;

    VkCommandPoolCreateInfo cpi = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
        .queueFamilyIndex = d->qfam,
    };
    if ((r = vkCreateCommandPool(d->dev, &cpi, NULL, &d->cmd_pool)) != VK_SUCCESS)
        goto fail_vk;
    VkCommandBuffer cbs[KVB_VK_RING];
    VkCommandBufferAllocateInfo cai = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .commandPool = d->cmd_pool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = KVB_VK_RING,
    };
    if ((r = vkAllocateCommandBuffers(d->dev, &cai, cbs)) != VK_SUCCESS)
        goto fail_vk;
    for (int i = 0; i < KVB_VK_RING; i++) {
        d->ring[i].cb = cbs[i];
        VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
        if ((r = vkCreateFence(d->dev, &fci, NULL, &d->ring[i].fence)) != VK_SUCCESS)
            goto fail_vk;
    }
    return 0;

fail_vk:
    rc = kvb_vk_err(r);
fail:
    kvb_vk_close(dev);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Tables                                                                   */
/* ------------------------------------------------------------------------ */

static void kvb_vk_write_set(struct kvb_vk_dev *d, struct kvb_vk_table *vt)
{
    VkDeviceSize stage_range = vt->stage.b.size < d->max_range ? vt->stage.b.size : d->max_range;
    VkDescriptorBufferInfo bi[4] = {
        {.buffer = vt->img.buf, .offset = 0, .range = VK_WHOLE_SIZE},
        {.buffer = vt->tok.buf, .offset = 0, .range = VK_WHOLE_SIZE},
        {.buffer = vt->slots.buf, .offset = 0, .range = VK_WHOLE_SIZE},
        {.buffer = vt->stage.b.buf, .offset = 0, .range = stage_range},
    };
    VkWriteDescriptorSet w[4];
    for (uint32_t i = 0; i < 4; i++)
        w[i] = (VkWriteDescriptorSet){
            .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
            .dstSet = vt->set,
            .dstBinding = i,
            .descriptorCount = 1,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .pBufferInfo = &bi[i],
        };
    vkUpdateDescriptorSets(d->dev, 4, w, 0, NULL);
}

/* Token buffers for cap tokens, rounded up to groups of four (the kernel maps four
 * tokens per invocation); host-visible, device-local preferred (ReBAR). */
static int kvb_vk_token_bufs(struct kvb_vk_dev *d, struct kvb_vk_table *vt, uint32_t cap)
{
    struct kvb_vk_buf tok, slots;
    const VkDeviceSize bytes = ((VkDeviceSize)cap + 3) / 4 * 4 * 8;
    int rc = kvb_vk_buf_create(d, bytes, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, KVB_VK_HOST,
                               VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, &tok);
    if (rc)
        return rc;
    rc = kvb_vk_buf_create(d, bytes, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, KVB_VK_HOST,
                           VK_MEMORY_PROPERTY_HOST_CACHED_BIT, &slots);
    if (rc) {
        kvb_vk_buf_destroy(d, &tok);
        return rc;
    }
    kvb_vk_buf_destroy(d, &vt->tok);
    kvb_vk_buf_destroy(d, &vt->slots);
    vt->tok = tok;
    vt->slots = slots;
    vt->tok_cap = cap;
    return 0;
}

static void kvb_vk_table_free(struct kvb_vk_dev *d, struct kvb_vk_table *vt)
{
    kvb_vk_buf_destroy(d, &vt->img);
    kvb_vk_buf_destroy(d, &vt->stage.b);
    kvb_vk_buf_destroy(d, &vt->tok);
    kvb_vk_buf_destroy(d, &vt->slots);
    if (vt->dpool)
        vkDestroyDescriptorPool(d->dev, vt->dpool, NULL);
    free(vt->regions);
    free(vt);
}

/* Most tokens one submission maps: token buffers within maxStorageBufferRange (8 bytes
 * per token in each), a multiple of four. */
static uint32_t kvb_vk_max_tokens(const struct kvb_vk_dev *d)
{
    VkDeviceSize m = d->max_range / 8;
    if (m > (1u << 30))
        m = 1u << 30;
    return (uint32_t)m & ~3u;
}

static int kvb_vk_table_create(kvb_table *t)
{
    struct kvb_vk_dev *d = kvb_vk(t->dev);
    const VkDeviceSize image_bytes = t->image_words * 4;
    if (image_bytes > d->max_range || image_bytes > d->max_alloc)
        return -E2BIG;
    struct kvb_vk_table *vt = calloc(1, sizeof *vt);
    if (!vt)
        return -ENOMEM;
    vt->regions = calloc(2 * (size_t)t->max_seqs + 1, sizeof *vt->regions);
    if (!vt->regions) {
        free(vt);
        return -ENOMEM;
    }
    uint32_t cap = t->max_seqs > KVB_VK_MIN_TOKENS ? t->max_seqs : KVB_VK_MIN_TOKENS;
    if (cap > kvb_vk_max_tokens(d))
        cap = kvb_vk_max_tokens(d);
    VkDeviceSize stage_bytes = image_bytes + (image_bytes / 4 > 65536 ? image_bytes / 4 : 65536);
    int rc =
        kvb_vk_buf_create(d, image_bytes,
                          VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT |
                              VK_BUFFER_USAGE_TRANSFER_SRC_BIT,
                          0, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, &vt->img);
    if (!rc)
        rc = kvb_vk_buf_create(d, stage_bytes,
                               VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT |
                                   VK_BUFFER_USAGE_STORAGE_BUFFER_BIT,
                               KVB_VK_HOST, VK_MEMORY_PROPERTY_HOST_CACHED_BIT, &vt->stage.b);
    if (!rc)
        rc = kvb_vk_token_bufs(d, vt, cap);
    if (rc)
        goto fail;

    VkDescriptorPoolSize ps = {.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .descriptorCount = 4};
    VkDescriptorPoolCreateInfo dpi = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
        .maxSets = 1,
        .poolSizeCount = 1,
        .pPoolSizes = &ps,
    };
    VkResult r = vkCreateDescriptorPool(d->dev, &dpi, NULL, &vt->dpool);
    if (r == VK_SUCCESS) {
        VkDescriptorSetAllocateInfo sai = {
            .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
            .descriptorPool = vt->dpool,
            .descriptorSetCount = 1,
            .pSetLayouts = &d->dsl,
        };
        r = vkAllocateDescriptorSets(d->dev, &sai, &vt->set);
    }
    if (r != VK_SUCCESS) {
        rc = kvb_vk_err(r);
        goto fail;
    }
    kvb_vk_write_set(d, vt);

    /* the image starts as zeros, like the shadow */
    struct kvb_vk_cmd *c;
    if ((rc = kvb_vk_begin(t->dev, &c)))
        goto fail;
    vkCmdFillBuffer(c->cb, vt->img.buf, 0, VK_WHOLE_SIZE, 0);
    if ((rc = kvb_vk_submit(t->dev, c, &vt->last_serial)))
        goto fail;
    t->impl = vt;
    return 0;
fail:
    kvb_vk_table_free(d, vt);
    return rc;
}

static void kvb_vk_table_destroy(kvb_table *t)
{
    struct kvb_vk_table *vt = t->impl;
    struct kvb_vk_dev *d = kvb_vk(t->dev);
    if (kvb_vk_wait(t->dev, vt->last_serial))
        vkDeviceWaitIdle(d->dev); /* device failed: make sure nothing runs */
    kvb_vk_table_free(d, vt);
}

/* How a set of dirty spans is uploaded: long spans as copy regions, short ones (when
 * there are many) as (index, value) pairs for the scatter kernel. */
struct kvb_vk_plan {
    bool scatter;
    VkDeviceSize region_bytes; /* bytes of the spans copied as regions */
    uint64_t pairs;            /* words written by the scatter kernel */
    VkDeviceSize bytes;        /* staging needed */
};

static void kvb_vk_plan_upload(const kvb__span *spans, uint32_t n, struct kvb_vk_plan *pl)
{
    uint32_t nshort = 0;
    uint64_t short_words = 0, long_words = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (spans[i].n <= KVB_VK_SCATTER_SPAN) {
            nshort++;
            short_words += spans[i].n;
        } else {
            long_words += spans[i].n;
        }
    }
    pl->scatter = nshort >= KVB_VK_SCATTER_MIN;
    if (!pl->scatter) {
        long_words += short_words;
        short_words = 0;
    }
    pl->region_bytes = long_words * 4;
    pl->pairs = short_words;
    pl->bytes = ((pl->region_bytes + 7) & ~(VkDeviceSize)7) + short_words * 8;
}

/* Largest number of invocations one 1-D dispatch may cover. */
static uint32_t kvb_vk_per_dispatch(const struct kvb_vk_dev *d)
{
    uint64_t n = (uint64_t)d->max_groups * d->local_size;
    return n > (1u << 31) ? (1u << 31) : (uint32_t)n;
}

/* Write the spans of the shadow into staging at off (reserved, by the caller, before
 * it took the device lock) and record the upload: one vkCmdCopyBuffer for the copy
 * regions and, when planned, scatter dispatches for the short spans. */
static void kvb_vk_record_upload(kvb_table *t, struct kvb_vk_cmd *c, const kvb__span *spans,
                                 uint32_t n, VkDeviceSize off, const struct kvb_vk_plan *pl)
{
    struct kvb_vk_dev *d = kvb_vk(t->dev);
    struct kvb_vk_table *vt = t->impl;
    VkDeviceSize range = vt->stage.b.size < d->max_range ? vt->stage.b.size : d->max_range;
    /* the pairs must lie inside the bound range; else everything goes as regions,
     * which needs less staging than the plan reserved */
    bool use_scatter = pl->scatter && off + pl->bytes <= range;
    VkDeviceSize at = off;
    uint32_t nreg = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (use_scatter && spans[i].n <= KVB_VK_SCATTER_SPAN)
            continue;
        VkDeviceSize sz = spans[i].n * 4;
        memcpy(vt->stage.b.map + at, t->host + spans[i].off, sz);
        vt->regions[nreg++] =
            (VkBufferCopy){.srcOffset = at, .dstOffset = spans[i].off * 4, .size = sz};
        at += sz;
    }
    if (nreg)
        vkCmdCopyBuffer(c->cb, vt->stage.b.buf, vt->img.buf, nreg, vt->regions);
    if (!use_scatter)
        return;
    at = (at + 7) & ~(VkDeviceSize)7;
    uint32_t *pp = (uint32_t *)(vt->stage.b.map + at), k = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (spans[i].n > KVB_VK_SCATTER_SPAN)
            continue;
        for (uint64_t w = spans[i].off; w < spans[i].off + spans[i].n; w++) {
            pp[2 * k] = (uint32_t)w;
            pp[2 * k + 1] = (uint32_t)t->host[w];
            k++;
        }
    }
    vkCmdBindPipeline(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, d->scatter);
    vkCmdBindDescriptorSets(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, d->layout, 0, 1, &vt->set, 0,
                            NULL);
    const uint32_t per = kvb_vk_per_dispatch(d);
    for (uint32_t first = 0; first < k; first += per) {
        struct kvb_vk_scatter_pc pc = {
            .base = (uint32_t)(at / 8) + first,
            .count = k - first < per ? k - first : per,
        };
        vkCmdPushConstants(c->cb, d->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof pc, &pc);
        vkCmdDispatch(c->cb, (pc.count + d->local_size - 1) / d->local_size, 1, 1);
        KVB__COUNT(t->dev, dispatches, 1);
    }
}

static int kvb_vk_table_upload(kvb_table *t, const kvb__span *spans, uint32_t n)
{
    struct kvb_vk_table *vt = t->impl;
    struct kvb_vk_cmd *c;
    struct kvb_vk_plan pl;
    VkDeviceSize off;
    uint64_t serial;
    kvb_vk_plan_upload(spans, n, &pl);
    /* reserve staging before taking the device lock: reserving may wait */
    int rc = kvb_vk_stage_alloc(t->dev, &vt->stage, pl.bytes, &off);
    if (rc)
        return rc;
    if ((rc = kvb_vk_begin(t->dev, &c)))
        return rc;
    kvb_vk_record_upload(t, c, spans, n, off, &pl);
    if ((rc = kvb_vk_submit(t->dev, c, &serial)))
        return rc;
    kvb_vk_stage_commit(&vt->stage, off, pl.bytes, serial);
    vt->last_serial = serial;
    return 0;
}

static int kvb_vk_slot_chunk(kvb_table *t, const kvb__span *spans, uint32_t nspans,
                             const uint32_t *rows, const uint32_t *pos, uint32_t num_tokens,
                             uint32_t padded, int64_t *out)
{
    struct kvb_vk_dev *d = kvb_vk(t->dev);
    struct kvb_vk_table *vt = t->impl;
    int rc;
    if (padded > vt->tok_cap) {
        /* grow (doubling): wait for the table's work, then rewrite the set */
        uint32_t cap = vt->tok_cap;
        while (cap < padded)
            cap = cap > kvb_vk_max_tokens(d) / 2 ? kvb_vk_max_tokens(d) : cap * 2;
        if ((rc = kvb_vk_wait(t->dev, vt->last_serial)))
            return rc;
        if ((rc = kvb_vk_token_bufs(d, vt, cap)))
            return rc;
        kvb_vk_write_set(d, vt);
    }
    struct kvb_vk_plan pl = {0};
    VkDeviceSize off = 0;
    if (nspans) {
        kvb_vk_plan_upload(spans, nspans, &pl);
        if ((rc = kvb_vk_stage_alloc(t->dev, &vt->stage, pl.bytes, &off)))
            return rc;
    }
    /* the token buffers are idle: every slot mapping waits for its submission */
    memcpy(vt->tok.map, rows, (size_t)num_tokens * 4);
    memcpy(vt->tok.map + (size_t)((num_tokens + 3) & ~3u) * 4, pos, (size_t)num_tokens * 4);

    struct kvb_vk_cmd *c;
    if ((rc = kvb_vk_begin(t->dev, &c)))
        return rc;
    if (nspans) {
        kvb_vk_record_upload(t, c, spans, nspans, off, &pl);
        kvb_vk_barrier(c->cb, KVB_VK_STAGES, KVB_VK_WRITES, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                       VK_ACCESS_SHADER_READ_BIT);
    }
    const uint32_t bs = t->block_size;
    const bool pow2 = (bs & (bs - 1)) == 0;
    struct kvb_vk_pc pc = {
        .num_tokens = num_tokens,
        .padded = padded,
        .block_size = bs,
        .max_blocks = t->max_blocks,
        .shift = pow2 ? (uint32_t)__builtin_ctz(bs) : 0,
    };
    vkCmdBindPipeline(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, pow2 ? d->slot_pow2 : d->slot_div);
    vkCmdBindDescriptorSets(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, d->layout, 0, 1, &vt->set, 0,
                            NULL);
    const uint32_t per = kvb_vk_per_dispatch(d);
    const uint32_t groups4 = (padded + 3) / 4;
    for (uint32_t first = 0; first < groups4; first += per) {
        uint32_t cnt = groups4 - first < per ? groups4 - first : per;
        pc.first = first;
        vkCmdPushConstants(c->cb, d->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof pc, &pc);
        vkCmdDispatch(c->cb, (cnt + d->local_size - 1) / d->local_size, 1, 1);
        KVB__COUNT(t->dev, dispatches, 1);
    }
    kvb_vk_barrier(c->cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                   VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    uint64_t serial;
    if ((rc = kvb_vk_submit(t->dev, c, &serial)))
        return rc;
    if (nspans)
        kvb_vk_stage_commit(&vt->stage, off, pl.bytes, serial);
    vt->last_serial = serial;
    if ((rc = kvb_vk_wait(t->dev, serial)))
        return rc;
    memcpy(out, vt->slots.map, (size_t)padded * 8); /* uvec2 (lo, hi) = little-endian int64 */
    return 0;
}

static int kvb_vk_slot_mapping(kvb_table *t, const kvb__span *spans, uint32_t nspans,
                               const uint32_t *rows, const uint32_t *pos, uint32_t num_tokens,
                               uint32_t padded, int64_t *out)
{
    /* One submission unless the batch exceeds what one dispatch's buffers can hold. */
    const uint32_t max = kvb_vk_max_tokens(kvb_vk(t->dev));
    uint32_t done = 0;
    do {
        uint32_t chunk = padded - done > max ? max : padded - done;
        uint32_t ntok = num_tokens > done ? num_tokens - done : 0;
        if (ntok > chunk)
            ntok = chunk;
        int rc;
        if (ntok == 0) {
            for (uint32_t i = 0; i < chunk; i++)
                out[done + i] = -1;
            rc = 0;
        } else {
            rc = kvb_vk_slot_chunk(t, spans, nspans, rows + done, pos + done, ntok, chunk,
                                   out + done);
        }
        if (rc)
            return rc;
        nspans = 0; /* uploaded with the first chunk */
        done += chunk;
    } while (done < padded);
    return 0;
}

static int kvb_vk_table_read(kvb_table *t, uint64_t word, uint32_t n, int32_t *out)
{
    struct kvb_vk_table *vt = t->impl;
    VkDeviceSize off, bytes = (VkDeviceSize)n * 4;
    int rc = kvb_vk_stage_alloc(t->dev, &vt->stage, bytes, &off);
    if (rc)
        return rc;
    struct kvb_vk_cmd *c;
    if ((rc = kvb_vk_begin(t->dev, &c)))
        return rc;
    VkBufferCopy reg = {.srcOffset = word * 4, .dstOffset = off, .size = bytes};
    vkCmdCopyBuffer(c->cb, vt->img.buf, vt->stage.b.buf, 1, &reg);
    kvb_vk_barrier(c->cb, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                   VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    uint64_t serial;
    if ((rc = kvb_vk_submit(t->dev, c, &serial)))
        return rc;
    kvb_vk_stage_commit(&vt->stage, off, bytes, serial);
    vt->last_serial = serial;
    if ((rc = kvb_vk_wait(t->dev, serial)))
        return rc;
    memcpy(out, vt->stage.b.map + off, bytes);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* KV buffers                                                               */
/* ------------------------------------------------------------------------ */

static void kvb_vk_kv_free(struct kvb_vk_dev *d, struct kvb_vk_kv *k)
{
    if (k->chunks)
        for (uint32_t i = 0; i < k->nchunks; i++)
            kvb_vk_buf_destroy(d, &k->chunks[i]);
    kvb_vk_buf_destroy(d, &k->stage);
    free(k->chunks);
    free(k);
}

static int kvb_vk_kv_create(kvb_kv_buffer *b)
{
    struct kvb_vk_dev *d = kvb_vk(b->dev);
    if (b->block_bytes > d->max_alloc)
        return -EINVAL;
    struct kvb_vk_kv *k = calloc(1, sizeof *k);
    if (!k)
        return -ENOMEM;
    VkDeviceSize per = d->max_alloc / b->block_bytes;
    k->chunk_blocks = per >= b->num_blocks ? b->num_blocks : (uint32_t)per;
    k->nchunks = (b->num_blocks + k->chunk_blocks - 1) / k->chunk_blocks;
    k->chunks = calloc(k->nchunks, sizeof *k->chunks);
    int rc = k->chunks ? 0 : -ENOMEM;
    for (uint32_t i = 0; i < k->nchunks && !rc; i++) {
        uint32_t nb = b->num_blocks - i * k->chunk_blocks;
        if (nb > k->chunk_blocks)
            nb = k->chunk_blocks;
        /* rounded up to 4 bytes so vkCmdFillBuffer(VK_WHOLE_SIZE) zeroes every byte */
        VkDeviceSize sz = ((VkDeviceSize)nb * b->block_bytes + 3) & ~(VkDeviceSize)3;
        rc = kvb_vk_buf_create(d, sz,
                               VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                               0, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, &k->chunks[i]);
    }
    if (!rc)
        rc = kvb_vk_buf_create(d, b->block_bytes,
                               VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                               KVB_VK_HOST, VK_MEMORY_PROPERTY_HOST_CACHED_BIT, &k->stage);
    struct kvb_vk_cmd *c;
    if (!rc)
        rc = kvb_vk_begin(b->dev, &c);
    if (!rc) {
        for (uint32_t i = 0; i < k->nchunks; i++)
            vkCmdFillBuffer(c->cb, k->chunks[i].buf, 0, VK_WHOLE_SIZE, 0);
        rc = kvb_vk_submit(b->dev, c, &k->last_serial);
    }
    if (rc) {
        kvb_vk_kv_free(d, k);
        return rc;
    }
    b->impl = k;
    return 0;
}

static void kvb_vk_kv_destroy(kvb_kv_buffer *b)
{
    struct kvb_vk_kv *k = b->impl;
    struct kvb_vk_dev *d = kvb_vk(b->dev);
    if (kvb_vk_wait(b->dev, k->last_serial))
        vkDeviceWaitIdle(d->dev);
    kvb_vk_kv_free(d, k);
}

static inline void kvb_vk_locate(const kvb_kv_buffer *b, uint32_t block, uint32_t *chunk,
                                 VkDeviceSize *off)
{
    const struct kvb_vk_kv *k = b->impl;
    *chunk = block / k->chunk_blocks;
    *off = (VkDeviceSize)(block % k->chunk_blocks) * b->block_bytes;
}

static int kvb_vk_kv_write(kvb_kv_buffer *b, uint32_t block, const void *src)
{
    struct kvb_vk_kv *k = b->impl;
    /* the staging block may still be read by the previous submission */
    int rc = kvb_vk_wait(b->dev, k->last_serial);
    if (rc)
        return rc;
    memcpy(k->stage.map, src, b->block_bytes);
    uint32_t ch;
    VkDeviceSize off;
    kvb_vk_locate(b, block, &ch, &off);
    struct kvb_vk_cmd *c;
    if ((rc = kvb_vk_begin(b->dev, &c)))
        return rc;
    VkBufferCopy reg = {.srcOffset = 0, .dstOffset = off, .size = b->block_bytes};
    vkCmdCopyBuffer(c->cb, k->stage.buf, k->chunks[ch].buf, 1, &reg);
    return kvb_vk_submit(b->dev, c, &k->last_serial);
}

static int kvb_vk_kv_read(kvb_kv_buffer *b, uint32_t block, void *dst)
{
    struct kvb_vk_kv *k = b->impl;
    uint32_t ch;
    VkDeviceSize off;
    kvb_vk_locate(b, block, &ch, &off);
    struct kvb_vk_cmd *c;
    int rc = kvb_vk_begin(b->dev, &c);
    if (rc)
        return rc;
    VkBufferCopy reg = {.srcOffset = off, .dstOffset = 0, .size = b->block_bytes};
    vkCmdCopyBuffer(c->cb, k->chunks[ch].buf, k->stage.buf, 1, &reg);
    kvb_vk_barrier(c->cb, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                   VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    if ((rc = kvb_vk_submit(b->dev, c, &k->last_serial)))
        return rc;
    if ((rc = kvb_vk_wait(b->dev, k->last_serial)))
        return rc;
    memcpy(dst, k->stage.map, b->block_bytes);
    return 0;
}

struct kvb_vk_keyed {
    uint64_t key; /* src chunk * nchunks + dst chunk */
    VkBufferCopy reg;
};

static int kvb_vk_key_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct kvb_vk_keyed *)a)->key, y = ((const struct kvb_vk_keyed *)b)->key;
    return (x > y) - (x < y);
}

static int kvb_vk_kv_copy(kvb_kv_buffer *b, const kvb_copy_pair *pairs, uint32_t n)
{
    struct kvb_vk_kv *k = b->impl;
    struct kvb_vk_keyed *v = malloc((size_t)n * sizeof *v);
    VkBufferCopy *regs = malloc((size_t)n * sizeof *regs);
    if (!v || !regs) {
        free(v);
        free(regs);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t sc, dc;
        VkDeviceSize so, dof;
        kvb_vk_locate(b, pairs[i].src, &sc, &so);
        kvb_vk_locate(b, pairs[i].dst, &dc, &dof);
        v[i].key = (uint64_t)sc * k->nchunks + dc;
        v[i].reg = (VkBufferCopy){.srcOffset = so, .dstOffset = dof, .size = b->block_bytes};
    }
    if (k->nchunks > 1)
        qsort(v, n, sizeof *v, kvb_vk_key_cmp);
    for (uint32_t i = 0; i < n; i++)
        regs[i] = v[i].reg;
    struct kvb_vk_cmd *c;
    int rc = kvb_vk_begin(b->dev, &c);
    if (rc == 0) {
        /* one vkCmdCopyBuffer per (source chunk, destination chunk) run; regions of one
         * call never overlap (the front end rejected every hazard) */
        for (uint32_t i = 0; i < n;) {
            uint32_t j = i + 1;
            while (j < n && v[j].key == v[i].key)
                j++;
            uint32_t sc = (uint32_t)(v[i].key / k->nchunks), dc = (uint32_t)(v[i].key % k->nchunks);
            vkCmdCopyBuffer(c->cb, k->chunks[sc].buf, k->chunks[dc].buf, j - i, regs + i);
            i = j;
        }
        rc = kvb_vk_submit(b->dev, c, &k->last_serial);
    }
    free(v);
    free(regs);
    return rc;
}

const struct kvb_device_ops kvb__device_vulkan_ops = {
    .version = KVB_DEVICE_OPS_VERSION,
    .name = "vulkan",
    .kind = KVB_DEVICE_VULKAN,
    .open = kvb_vk_open,
    .close = kvb_vk_close,
    .wait_idle = kvb_vk_wait_idle,
    .table_create = kvb_vk_table_create,
    .table_destroy = kvb_vk_table_destroy,
    .table_upload = kvb_vk_table_upload,
    .slot_mapping = kvb_vk_slot_mapping,
    .table_read = kvb_vk_table_read,
    .kv_create = kvb_vk_kv_create,
    .kv_destroy = kvb_vk_kv_destroy,
    .kv_write = kvb_vk_kv_write,
    .kv_read = kvb_vk_kv_read,
    .kv_copy = kvb_vk_kv_copy,
};
