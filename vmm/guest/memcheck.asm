# memcheck.asm - the memory-pattern guest.
#
# Region: [base_mib MiB, base_mib + span_mib MiB). span_mib defaults to all RAM
# from base_mib to the end of the RAM the Multiboot information reports
# (1 MiB + mem_upper KiB, rounded down to a whole MiB, at most 3 GiB); a larger
# span_mib is clamped to that end.
#
# Protocol (COM1):
#   pass 0 fills every 8-byte word at address a with pattern(a, 0) and prints
#     "mem filled <span_mib> MiB\n";
#   then every pace_ms milliseconds pass k = 1, 2, ... checks every word
#     against pattern(a, k-1) and rewrites it with pattern(a, k), printing
#     "mem ok <k>\n", or at the first mismatch
#     "mem BAD at 0x<a> pass <k>\n" and exits with status 1.
#   With passes=P it exits with status 0 after pass P.
# Errors before pass 0 print "mem bad args\n" and exit with status 1.
#
# pattern(a, k) = a XOR ((k+1) * 0x9E3779B97F4A7C15): distinct for every word
# within a pass and for every pass at one word, so every page changes at every
# pass (a workload for live-migration dirty tracking). The pass number lives in
# guest RAM, so a migrated guest continues with the next pass.
#
# Command line: base_mib= (4), span_mib= (rest of RAM), pace_ms= (500),
# passes= (0 = forever), tsc_khz= (read by common.inc).

	.include "common.inc"

	.set GOLDEN, 0x9E3779B97F4A7C15

	.section .rodata
key_base:    .asciz "base_mib="
key_span:    .asciz "span_mib="
key_pace:    .asciz "pace_ms="
key_passes:  .asciz "passes="
msg_filled:  .asciz "mem filled "
msg_mib:     .asciz " MiB\n"
msg_ok:      .asciz "mem ok "
msg_bad:     .asciz "mem BAD at 0x"
msg_pass:    .asciz " pass "
msg_badargs: .asciz "mem bad args\n"

	.data
	.balign 8
pass_count:  .quad 0                   # last completed pass; survives migration with RAM

	.text
# Registers in main: r12 = region start, r13 = region end, r14 = period (TSC),
# r15 = passes limit, rbx = next deadline.
main:
	lea key_base(%rip), %rdi
	mov $4, %esi
	call arg_num
	shl $20, %rax
	mov %rax, %r12
	lea _bss_end(%rip), %rcx           # never overwrite this image
	cmp %rcx, %r12
	jb bad_args

	# end = ram_end rounded down to a MiB; span_mib= may only shrink it.
	mov ram_end(%rip), %r13
	and $~0xFFFFF, %r13
	lea key_span(%rip), %rdi
	call arg_has
	test %rax, %rax
	jz 1f
	lea key_span(%rip), %rdi
	xor %esi, %esi
	call arg_num
	shl $20, %rax
	add %r12, %rax
	cmp %r13, %rax
	cmovb %rax, %r13
1:	cmp %r12, %r13
	jbe bad_args                       # empty region (or no memory information)

	lea key_pace(%rip), %rdi
	mov $500, %esi
	call arg_num
	mov %rax, %rdi
	call ms_to_tsc
	mov %rax, %r14
	lea key_passes(%rip), %rdi
	xor %esi, %esi
	call arg_num
	mov %rax, %r15

	# Pass 0: fill.
	mov $GOLDEN, %rdx                  # (0+1) * GOLDEN
	mov %r12, %rdi
2:	mov %rdi, %rax
	xor %rdx, %rax
	mov %rax, (%rdi)
	add $8, %rdi
	cmp %r13, %rdi
	jb 2b

	lea msg_filled(%rip), %rdi
	call puts
	mov %r13, %rdi
	sub %r12, %rdi
	shr $20, %rdi
	call put_dec
	lea msg_mib(%rip), %rdi
	call puts

	call tsc_now
	lea (%rax,%r14), %rbx

pass_loop:
	mov %rbx, %rdi
	call sleep_until
	add %r14, %rbx                     # phase-locked deadline, resync if a period late
	call tsc_now
	cmp %rax, %rbx
	ja 3f
	lea (%rax,%r14), %rbx
3:
	# Pass k: the old key is k * GOLDEN (pattern of pass k-1), the new key
	# (k+1) * GOLDEN. A good word holds a ^ old, so word ^ old == a.
	mov pass_count(%rip), %rax
	inc %rax                           # k
	mov $GOLDEN, %rdx
	imul %rax, %rdx                    # rdx = old key
	lea 1(%rax), %rcx
	mov $GOLDEN, %r8
	imul %rcx, %r8                     # r8 = new key
	mov %r12, %rdi
4:	mov (%rdi), %rax
	xor %rdx, %rax
	cmp %rdi, %rax
	jne bad_word
	xor %r8, %rax                      # a ^ new
	mov %rax, (%rdi)
	add $8, %rdi
	cmp %r13, %rdi
	jb 4b

	incq pass_count(%rip)
	lea msg_ok(%rip), %rdi
	call puts
	mov pass_count(%rip), %rdi
	call put_dec
	call nl
	test %r15, %r15
	jz pass_loop
	cmp %r15, pass_count(%rip)
	jb pass_loop
	xor %eax, %eax                     # passes= reached: exit 0
	ret

bad_word:                              # rdi = address of the first bad word
	push %rdi
	lea msg_bad(%rip), %rdi
	call puts
	pop %rdi
	call put_hex
	lea msg_pass(%rip), %rdi
	call puts
	mov pass_count(%rip), %rdi
	inc %rdi
	call put_dec
	call nl
	mov $1, %eax
	ret

bad_args:
	lea msg_badargs(%rip), %rdi
	jmp die
