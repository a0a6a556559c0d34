# panic.asm - the guest that panics on command, through the pvpanic device.
#
# Protocol (COM1):
#   "panic ready\n"  once, after the command line is parsed;
#   "tick N\n"       for N = 1, 2, 3, ... every pace_ms milliseconds, as the
#                    ticker prints them (absolute TSC deadlines, no catch-up
#                    after a pause; the counter lives in guest RAM, so a
#                    migrated guest goes on counting);
#   "panicking\n"    right after tick panic_after, when panic_after > 0;
#                    then it writes 1 (PVPANIC_PANICKED) to port 0x505, as
#                    a kernel's pvpanic driver does, and halts: it sleeps
#                    forever through the paravirtual sleep port (HLT is not
#                    allowed at CPL3). A VMM with a pvpanic device ends the
#                    VM there; one without it leaves the guest asleep.
#
# Command line: pace_ms= (100), panic_after= (0 = never panic),
# tsc_khz= (read by common.inc).

	.include "common.inc"

	.set PORT_PVPANIC,   0x505
	.set PVPANIC_PANICKED, 1

	.section .rodata
key_pace:        .asciz "pace_ms="
key_panic_after: .asciz "panic_after="
msg_ready:       .asciz "panic ready\n"
msg_tick:        .asciz "tick "
msg_panicking:   .asciz "panicking\n"

	.data
	.balign 8
tick_count:      .quad 0               # ticks printed so far; survives migration with RAM

	.text
# Registers in main: rbx = next deadline (TSC), r12 = period (TSC ticks),
# r13 = panic_after.
main:
	lea key_pace(%rip), %rdi
	mov $100, %esi
	call arg_num
	mov %rax, %rdi
	call ms_to_tsc
	mov %rax, %r12

	lea key_panic_after(%rip), %rdi
	xor %esi, %esi
	call arg_num
	mov %rax, %r13

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
	incq tick_count(%rip)
	lea msg_tick(%rip), %rdi
	call puts
	mov tick_count(%rip), %rdi
	call put_dec
	call nl

	test %r13, %r13
	jz tick_loop                       # panic_after=0: never
	cmp %r13, tick_count(%rip)
	jb tick_loop

	lea msg_panicking(%rip), %rdi
	call puts
	mov $PVPANIC_PANICKED, %eax
	mov $PORT_PVPANIC, %edx
	out %al, %dx                       # the VMM ends the VM here
2:	mov $1000000, %eax                 # no pvpanic device: halt, asleep for good
	mov $PORT_SLEEP, %edx
	out %eax, %dx
	pause
	jmp 2b
