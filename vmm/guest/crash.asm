# crash.asm - the failing guest: shows how a VMM reports a guest that dies.
#
# Protocol (COM1): prints "crash in <delay_ms> ms\n", waits delay_ms
# milliseconds (default 100), then executes UD2 at CPL3. The guests have no
# IDT, so the invalid-opcode fault escalates to a triple fault
# (KVM_EXIT_SHUTDOWN), which the VMM must turn into a failed VM with the
# reason, without harm to its own process.
#
# Command line: delay_ms= (100), tsc_khz= (read by common.inc).

	.include "common.inc"

	.section .rodata
key_delay:  .asciz "delay_ms="
msg_crash:  .asciz "crash in "
msg_ms:     .asciz " ms\n"

	.text
main:
	lea key_delay(%rip), %rdi
	mov $100, %esi
	call arg_num
	mov %rax, %rbx
	lea msg_crash(%rip), %rdi
	call puts
	mov %rbx, %rdi
	call put_dec
	lea msg_ms(%rip), %rdi
	call puts
	mov %rbx, %rdi
	call ms_to_tsc
	mov %rax, %rbx
	call tsc_now
	lea (%rax,%rbx), %rdi
	call sleep_until
	ud2
