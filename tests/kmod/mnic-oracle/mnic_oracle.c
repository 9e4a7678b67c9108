// SPDX-License-Identifier: GPL-2.0
/*
 * mnic_oracle: the stale-access oracle's guest half (docs/spec.md section 8a).
 *
 * The driver's promise is that once the kernel's invalidate callback returns, the device never
 * touches the old page again. The device's own checker only sees the invalidations the driver
 * chose to post, so it cannot catch a driver that forgets one. This module is the independent
 * witness: it registers its own plain mmu_notifier on the address space of a process that uses
 * an mnic context, and reports every invalidation of that address space straight to the
 * device's oracle registers. Linux calls the plain notifiers' invalidate_range_start after every
 * mmu interval notifier of the range (the driver's) has returned, and before it changes the page
 * tables; so from the moment of a report, any device access through a translation taken earlier
 * is a violation, and any leaf still in the context's table is one the driver failed to clear.
 *
 * It is written in C on purpose: it shares nothing with the driver, not even the Rust mmu
 * notifier abstraction the driver is built on, so a bug there cannot hide itself.
 *
 * Interface: /dev/mnic_oracle. Each open file arms at most one context. Commands are written as
 * one line of text:
 *   "arm BAR0 CTX"   BAR0 = the device's BAR0 bus address (hex, 0x...), CTX = context index:
 *                    arm the oracle for that context of the calling process's address space.
 *   "stall BAR0 MS"  arm the device's DEBUG_STALL_MS fault injection (any file).
 *   "peek BAR0 OFF"  read the 64-bit register (counter) at BAR0 offset OFF (hex); the next
 *                    read() of the file returns it in decimal. For tests whose driver declared
 *                    the device dead: its ioctls say ENODEV, the device still counts.
 * Closing the file disarms the device first, then removes the notifier.
 */

#include <linux/fs.h>
#include <linux/io.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>

#include "mnic_abi.h"

/* Every report is a sequence of register writes: one lock for all devices keeps them whole. */
static DEFINE_SPINLOCK(oracle_regs_lock);

struct oracle_arm {
	struct mmu_notifier mn;
	struct mm_struct *mm; /* set once armed */
	struct pci_dev *pdev;
	void __iomem *regs;
	u32 ctx;
	u32 gen;
	u64 peeked; /* last "peek" */
	struct mutex lock; /* arming vs close, peeked */
};

/* Ends a register sequence with a read: the device has acted on it when the read returns. */
static void oracle_flush(void __iomem *regs)
{
	(void)readl(regs + MNIC_REG_ORACLE_GEN);
}

static void oracle_report(struct oracle_arm *arm, u64 start, u64 end)
{
	unsigned long flags;

	spin_lock_irqsave(&oracle_regs_lock, flags);
	writel(arm->ctx, arm->regs + MNIC_REG_ORACLE_CTX);
	writel(arm->gen, arm->regs + MNIC_REG_ORACLE_GEN);
	writel(lower_32_bits(start), arm->regs + MNIC_REG_ORACLE_START_LO);
	writel(upper_32_bits(start), arm->regs + MNIC_REG_ORACLE_START_HI);
	writel(lower_32_bits(end), arm->regs + MNIC_REG_ORACLE_END_LO);
	writel(upper_32_bits(end), arm->regs + MNIC_REG_ORACLE_END_HI);
	writel(MNIC_ORACLE_OP_INVALIDATE, arm->regs + MNIC_REG_ORACLE_OP);
	oracle_flush(arm->regs);
	spin_unlock_irqrestore(&oracle_regs_lock, flags);
}

/* Runs after every interval notifier of the range returned (mm/mmu_notifier.c). */
static int oracle_invalidate_range_start(struct mmu_notifier *mn,
					 const struct mmu_notifier_range *range)
{
	struct oracle_arm *arm = container_of(mn, struct oracle_arm, mn);

	oracle_report(arm, range->start, range->end);
	return 0;
}

/* Process exit: after the interval notifiers' release, before the pages go. End 0 = 2^64. */
static void oracle_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	struct oracle_arm *arm = container_of(mn, struct oracle_arm, mn);

	oracle_report(arm, 0, 0);
}

static const struct mmu_notifier_ops oracle_mn_ops = {
	.invalidate_range_start = oracle_invalidate_range_start,
	.release = oracle_release,
};

/* The mnic function whose BAR0 starts at bar0, mapped. */
static int oracle_find(u64 bar0, struct pci_dev **pdev_out, void __iomem **regs_out)
{
	struct pci_dev *pdev = NULL;

	while ((pdev = pci_get_device(MNIC_VENDOR_ID, MNIC_DEVICE_ID, pdev))) {
		if (pci_resource_start(pdev, MNIC_BAR_REGS) != bar0 ||
		    pci_resource_len(pdev, MNIC_BAR_REGS) < MNIC_BAR_REGS_SIZE)
			continue;
		/* The driver owns the region; a second mapping of registers is harmless. */
		*regs_out = ioremap(bar0, MNIC_BAR_REGS_SIZE);
		if (!*regs_out) {
			pci_dev_put(pdev);
			return -ENOMEM;
		}
		*pdev_out = pdev;
		return 0;
	}
	return -ENODEV;
}

static int oracle_arm_ctx(struct oracle_arm *arm, u64 bar0, u32 ctx)
{
	unsigned long flags;
	int ret;

	if (arm->mm)
		return -EBUSY;
	if (!current->mm)
		return -EINVAL;
	ret = oracle_find(bar0, &arm->pdev, &arm->regs);
	if (ret)
		return ret;
	arm->ctx = ctx;
	spin_lock_irqsave(&oracle_regs_lock, flags);
	writel(ctx, arm->regs + MNIC_REG_ORACLE_CTX);
	writel(MNIC_ORACLE_OP_ARM, arm->regs + MNIC_REG_ORACLE_OP);
	arm->gen = readl(arm->regs + MNIC_REG_ORACLE_GEN);
	spin_unlock_irqrestore(&oracle_regs_lock, flags);
	/* 0: the device refused (no such context); all-ones: it is gone. */
	if (arm->gen == 0 || arm->gen == ~0u) {
		ret = -ENODEV;
		goto unmap;
	}
	arm->mn.ops = &oracle_mn_ops;
	ret = mmu_notifier_register(&arm->mn, current->mm);
	if (ret)
		goto unmap;
	arm->mm = current->mm;
	return 0;
unmap:
	iounmap(arm->regs);
	pci_dev_put(arm->pdev);
	arm->regs = NULL;
	arm->pdev = NULL;
	return ret;
}

static int oracle_stall(u64 bar0, u32 ms)
{
	struct pci_dev *pdev;
	void __iomem *regs;
	int ret = oracle_find(bar0, &pdev, &regs);

	if (ret)
		return ret;
	writel(ms, regs + MNIC_REG_DEBUG_STALL_MS);
	oracle_flush(regs);
	iounmap(regs);
	pci_dev_put(pdev);
	return 0;
}

static int oracle_peek(u64 bar0, u32 off, u64 *out)
{
	struct pci_dev *pdev;
	void __iomem *regs;
	int ret;

	if (off % 4 || off + 8 > MNIC_BAR_REGS_SIZE)
		return -EINVAL;
	ret = oracle_find(bar0, &pdev, &regs);
	if (ret)
		return ret;
	*out = readl(regs + off) | (u64)readl(regs + off + 4) << 32;
	iounmap(regs);
	pci_dev_put(pdev);
	return 0;
}

static ssize_t oracle_read(struct file *file, char __user *ubuf, size_t len, loff_t *pos)
{
	struct oracle_arm *arm = file->private_data;
	char buf[24];
	int n;

	mutex_lock(&arm->lock);
	n = scnprintf(buf, sizeof(buf), "%llu\n", arm->peeked);
	mutex_unlock(&arm->lock);
	return simple_read_from_buffer(ubuf, len, pos, buf, n);
}

static ssize_t oracle_write(struct file *file, const char __user *ubuf, size_t len,
			    loff_t *pos)
{
	struct oracle_arm *arm = file->private_data;
	char buf[96];
	u64 bar0;
	u32 arg;
	int ret;

	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = 0;
	if (sscanf(buf, "arm %llx %u", &bar0, &arg) == 2) {
		mutex_lock(&arm->lock);
		ret = oracle_arm_ctx(arm, bar0, arg);
		mutex_unlock(&arm->lock);
	} else if (sscanf(buf, "stall %llx %u", &bar0, &arg) == 2) {
		ret = oracle_stall(bar0, arg);
	} else if (sscanf(buf, "peek %llx %x", &bar0, &arg) == 2) {
		u64 v;

		ret = oracle_peek(bar0, arg, &v);
		if (!ret) {
			mutex_lock(&arm->lock);
			arm->peeked = v;
			mutex_unlock(&arm->lock);
			*pos = 0;
		}
	} else {
		ret = -EINVAL;
	}
	return ret ? ret : len;
}

static int oracle_open(struct inode *inode, struct file *file)
{
	struct oracle_arm *arm = kzalloc(sizeof(*arm), GFP_KERNEL);

	if (!arm)
		return -ENOMEM;
	mutex_init(&arm->lock);
	file->private_data = arm;
	return 0;
}

static int oracle_close(struct inode *inode, struct file *file)
{
	struct oracle_arm *arm = file->private_data;
	unsigned long flags;

	if (arm->mm) {
		/*
		 * Disarm first: unregistering calls ->release if the process is still alive, and
		 * that report must not judge a context that goes on working after this file.
		 */
		spin_lock_irqsave(&oracle_regs_lock, flags);
		writel(arm->ctx, arm->regs + MNIC_REG_ORACLE_CTX);
		writel(arm->gen, arm->regs + MNIC_REG_ORACLE_GEN);
		writel(MNIC_ORACLE_OP_DISARM, arm->regs + MNIC_REG_ORACLE_OP);
		oracle_flush(arm->regs);
		spin_unlock_irqrestore(&oracle_regs_lock, flags);
		mmu_notifier_unregister(&arm->mn, arm->mm);
		iounmap(arm->regs);
		pci_dev_put(arm->pdev);
	}
	kfree(arm);
	return 0;
}

static const struct file_operations oracle_fops = {
	.owner = THIS_MODULE,
	.open = oracle_open,
	.release = oracle_close,
	.write = oracle_write,
	.read = oracle_read,
	.llseek = noop_llseek,
};

static struct miscdevice oracle_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "mnic_oracle",
	.fops = &oracle_fops,
};

module_misc_device(oracle_misc);

MODULE_DESCRIPTION("mnic stale-access oracle: reports every invalidation to the device");
MODULE_LICENSE("GPL");
