/*
 * flowtwin shim: DPDK's fast path is static inline (rx/tx burst, mbuf alloc/free, ring
 * burst ops, rte_errno, rte_lcore_id, rte_rdtsc). Rust cannot call inline functions, so this
 * file re-exports each as a real symbol with an ft_ prefix. One call per burst costs nothing
 * measurable (DPDK-NOTES: 125 instructions/packet, same as testpmd io).
 */
#ifndef FLOWTWIN_SHIM_H
#define FLOWTWIN_SHIM_H
#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;
struct rte_ring;

uint16_t ft_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t ft_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *ft_pktmbuf_alloc(struct rte_mempool *mp);
int ft_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n);
void ft_pktmbuf_free(struct rte_mbuf *m);
void ft_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned n);
uint16_t ft_pktmbuf_data_room_size(struct rte_mempool *mp);
unsigned ft_mempool_avail_count(const struct rte_mempool *mp);
int ft_errno(void);
unsigned ft_lcore_id(void);
uint64_t ft_rdtsc(void);
uint64_t ft_tsc_hz(void);
void ft_prefetch0(const void *p);
unsigned ft_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n, unsigned *free_space);
unsigned ft_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n, unsigned *available);
unsigned ft_ring_count(const struct rte_ring *r);
void ft_pause(void);
/* Let the calling thread run on every CPU (EAL pinned it); 0 or -errno. */
int ft_float_current_thread(void);
/* Pin the calling thread to CPU `cpu`; 0 or -errno (-EINVAL: no such CPU). */
int ft_pin_current_thread(int cpu);
/* 1 if EAL lets lcore `lcore` run on CPU `cpu`, else 0. */
int ft_lcore_has_cpu(unsigned lcore, int cpu);

/* RTE_BIT64() macros bindgen cannot evaluate: exported as constants. */
extern const uint64_t FT_ETH_RSS_IP;
extern const uint64_t FT_ETH_RSS_TCP;
extern const uint64_t FT_ETH_RSS_UDP;
extern const uint64_t FT_ETH_RX_OFFLOAD_CHECKSUM;
extern const uint64_t FT_ETH_TX_OFFLOAD_IPV4_CKSUM;
extern const uint64_t FT_ETH_TX_OFFLOAD_TCP_CKSUM;
extern const uint64_t FT_ETH_TX_OFFLOAD_MBUF_FAST_FREE;
extern const unsigned FT_RING_F_SP_ENQ;
extern const unsigned FT_RING_F_SC_DEQ;
extern const int FT_SOCKET_ID_ANY;
#endif
