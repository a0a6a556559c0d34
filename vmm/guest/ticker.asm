# ticker.asm - the heartbeat guest.
#
# Protocol (COM1):
#   "ticker ready\n"  once, after the command line is parsed (hosts measure the
#                     time to the first serial byte with it);
#   "tick N\n"        for N = 1, 2, 3, ... every pace_ms milliseconds.
#
# Pacing uses absolute TSC deadlines (deadline += period), so the rate does not
# drift with the time spent printing. If a deadline is already a whole period
# in the past when the guest wakes (the VM was paused, say for a migration),
# the missed ticks are not replayed: the next deadline is now + period.
#
# Before each tick the guest dirties dirty_kib KiB of RAM from dirty_base_mib
# MiB: it writes the new tick number into the first 8 bytes of every 4 KiB page
# of that range, so every page is dirty again at every tick (a workload for
# live-migration dirty tracking). The range is clamped to the RAM the
# Multiboot information reports.
#
# The tick counter lives in guest RAM (tick_count), so a live-migrated guest
# carries on: the line after the migration is exactly "tick N+1".
#
# Command line: pace_ms= (100), dirty_kib= (0), dirty_base_mib= (16),
# ticks= (0 = forever; otherwise exit with status 0 after that many ticks),
# tsc_khz= (read by common.inc).

	.include "common.inc"

	.section .rodata
key_pace:       .asciz "pace_ms="
key_dirty_kib:  .asciz "dirty_kib="
key_dirty_base: .asciz "dirty_base_mib="
key_ticks:      .asciz "ticks="
msg_ready:      .asciz "ticker ready\n"
msg_tick:       .asciz "tick "

	.data
	.balign 8
tick_count:     .quad 0                # ticks printed so far; survives migration with RAM

	.text
# Registers in main: rbx = next deadline (TSC), r12 = period (TSC ticks),
# r13 = dirty range start, r14 = dirty range end, r15 = ticks limit.
main:
	lea key_pace(%rip), %rdi
	mov $100, %esi
	call arg_num
	mov %rax, %rdi
	call ms_to_tsc
	mov %rax, %r12

	lea key_dirty_base(%rip), %rdi
	mov $16, %esi
	call arg_num
	shl $20, %rax
	mov %rax, %r13
	lea key_dirty_kib(%rip), %rdi
	xor %esi, %esi
	call arg_num
	shl $10, %rax
	add %r13, %rax
	mov %rax, %r14
	# Clamp the range to RAM: end = min(end, ram_end), start = min(start, end).
	mov ram_end(%rip), %rax
	cmp %rax, %r14
	cmova %rax, %r14
	cmp %r14, %r13
	cmova %r14, %r13

	lea key_ticks(%rip), %rdi
	xor %esi, %esi
	call arg_num
	mov %rax, %r15

	lea msg_ready(%rip), %rdi
	call puts

	call tsc_now
	lea (%rax,%r12), %rbx              # first deadline: one period from now

tick_loop:
	mov %rbx, %rdi
	call sleep_until
	add %r12, %rbx                     # next deadline, phase-locked to the first
	call tsc_now
	cmp %rax, %rbx
	ja 1f
	lea (%rax,%r12), %rbx              # a whole period late: resynchronise, no catch-up burst
1:
	mov tick_count(%rip), %rcx
	inc %rcx

	# Dirty the range: one 8-byte write of the tick number per 4 KiB page.
	mov %r13, %rdi
2:	cmp %r14, %rdi
	jae 3f
	mov %rcx, (%rdi)
	add $4096, %rdi
	jmp 2b
3:
	mov %rcx, tick_count(%rip)
	lea msg_tick(%rip), %rdi
	call puts
	mov tick_count(%rip), %rdi
	call put_dec
	call nl

	test %r15, %r15
	jz tick_loop
	cmp %r15, tick_count(%rip)
	jb tick_loop
	xor %eax, %eax                     # ticks= reached: exit 0
	ret
