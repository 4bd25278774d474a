/* See shim.h: real symbols for DPDK's static-inline fast-path calls. */
#define _GNU_SOURCE
#include <sched.h>
#include <errno.h>
#include <rte_config.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_prefetch.h>
#include <rte_pause.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_ring.h>
#include "shim.h"

uint16_t ft_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t ft_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *ft_pktmbuf_alloc(struct rte_mempool *mp)
{
	return rte_pktmbuf_alloc(mp);
}

int ft_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, n);
}

void ft_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

void ft_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned n)
{
	rte_pktmbuf_free_bulk(mbufs, n);
}

uint16_t ft_pktmbuf_data_room_size(struct rte_mempool *mp)
{
	return rte_pktmbuf_data_room_size(mp);
}

unsigned ft_mempool_avail_count(const struct rte_mempool *mp)
{
	return rte_mempool_avail_count(mp);
}

int ft_errno(void)
{
	return rte_errno;
}

unsigned ft_lcore_id(void)
{
	return rte_lcore_id();
}

uint64_t ft_rdtsc(void)
{
	return rte_rdtsc();
}

uint64_t ft_tsc_hz(void)
{
	return rte_get_tsc_hz();
}

void ft_prefetch0(const void *p)
{
	rte_prefetch0(p);
}

unsigned ft_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n, unsigned *free_space)
{
	return rte_ring_enqueue_burst(r, objs, n, free_space);
}

unsigned ft_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n, unsigned *available)
{
	return rte_ring_dequeue_burst(r, objs, n, available);
}

unsigned ft_ring_count(const struct rte_ring *r)
{
	return rte_ring_count(r);
}

void ft_pause(void)
{
	rte_pause();
}

const uint64_t FT_ETH_RSS_IP = RTE_ETH_RSS_IP;
const uint64_t FT_ETH_RSS_TCP = RTE_ETH_RSS_TCP;
const uint64_t FT_ETH_RSS_UDP = RTE_ETH_RSS_UDP;
const uint64_t FT_ETH_RX_OFFLOAD_CHECKSUM = RTE_ETH_RX_OFFLOAD_CHECKSUM;
const uint64_t FT_ETH_TX_OFFLOAD_IPV4_CKSUM = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM;
const uint64_t FT_ETH_TX_OFFLOAD_TCP_CKSUM = RTE_ETH_TX_OFFLOAD_TCP_CKSUM;
const uint64_t FT_ETH_TX_OFFLOAD_MBUF_FAST_FREE = RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE;
const unsigned FT_RING_F_SP_ENQ = RING_F_SP_ENQ;
const unsigned FT_RING_F_SC_DEQ = RING_F_SC_DEQ;
const int FT_SOCKET_ID_ANY = SOCKET_ID_ANY;

int ft_pin_current_thread(int cpu)
{
	cpu_set_t one;

	if (cpu < 0 || cpu >= CPU_SETSIZE)
		return -EINVAL;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	if (sched_setaffinity(0, sizeof(one), &one) != 0)
		return -errno;
	return 0;
}

int ft_lcore_has_cpu(unsigned lcore, int cpu)
{
	rte_cpuset_t s;

	if (lcore >= RTE_MAX_LCORE || cpu < 0 || cpu >= CPU_SETSIZE)
		return 0;
	s = rte_lcore_cpuset(lcore);
	return CPU_ISSET(cpu, &s) ? 1 : 0;
}

int ft_float_current_thread(void)
{
	cpu_set_t all;
	int i;

	CPU_ZERO(&all);
	for (i = 0; i < CPU_SETSIZE; i++)
		CPU_SET(i, &all);
	/* Bits of CPUs that do not exist are ignored by the kernel. */
	if (sched_setaffinity(0, sizeof(all), &all) != 0)
		return -errno;
	return 0;
}
