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
# Zeroing (zero_pages=N, N > 0): pass zero_pass (K, default 1) checks the
# first N 4 KiB pages of the region as usual but writes zeros into them, and
# prints "mem zeroed <N> pages\n" before its "mem ok <K>\n"; every later pass
# only reads them and requires zeros (a nonzero word is "mem BAD at"). The
# pages are written once, after the pattern that the first pre-copy round of
# a migration sends, and never again: a migration that skips a page because
# it is zero now leaves the old pattern on the target, and the guest says BAD.
#
# Command line: base_mib= (4), span_mib= (rest of RAM), pace_ms= (500),
# passes= (0 = forever), zero_pages= (0), zero_pass= (1), tsc_khz= (read by
# common.inc).

	.include "common.inc"

	.set GOLDEN, 0x9E3779B97F4A7C15

	.section .rodata
key_base:    .asciz "base_mib="
key_span:    .asciz "span_mib="
key_pace:    .asciz "pace_ms="
key_passes:  .asciz "passes="
key_zpages:  .asciz "zero_pages="
key_zpass:   .asciz "zero_pass="
msg_zeroed:  .asciz "mem zeroed "
msg_pages:   .asciz " pages\n"
msg_filled:  .asciz "mem filled "
msg_mib:     .asciz " MiB\n"
msg_ok:      .asciz "mem ok "
msg_bad:     .asciz "mem BAD at 0x"
msg_pass:    .asciz " pass "
msg_badargs: .asciz "mem bad args\n"

	.data
	.balign 8
pass_count:  .quad 0                   # last completed pass; survives migration with RAM
zero_end:    .quad 0                   # end of the zeroed range [region start, zero_end)
zero_pass:   .quad 0                   # the pass that zeroes it

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

	# The zeroed range: zero_pages= pages from the region start, clamped
	# to the region; zero_pass= at least 1 (pass 0 only fills).
	lea key_zpages(%rip), %rdi
	xor %esi, %esi
	call arg_num
	mov %r13, %rcx
	sub %r12, %rcx
	shr $12, %rcx                      # pages in the region
	cmp %rcx, %rax
	cmova %rcx, %rax
	shl $12, %rax
	add %r12, %rax
	mov %rax, zero_end(%rip)
	lea key_zpass(%rip), %rdi
	mov $1, %esi
	call arg_num
	mov $1, %ecx
	test %rax, %rax
	cmovz %rcx, %rax
	mov %rax, zero_pass(%rip)

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
	mov pass_count(%rip), %r10
	inc %r10                           # r10 = k
	mov $GOLDEN, %rdx
	imul %r10, %rdx                    # rdx = old key
	lea 1(%r10), %rcx
	mov $GOLDEN, %r8
	imul %rcx, %r8                     # r8 = new key
	mov %r12, %rdi
	mov zero_end(%rip), %r9
	cmp zero_pass(%rip), %r10
	jb 4f                              # before the zeroing pass: all patterns
	je 6f
5:	cmp %r9, %rdi                      # after it: the zeroed range reads 0
	jae 4f
	cmpq $0, (%rdi)
	jne bad_word
	add $8, %rdi
	jmp 5b
6:	cmp %r9, %rdi                      # the zeroing pass: check, then 0
	jae 4f
	mov (%rdi), %rax
	xor %rdx, %rax
	cmp %rdi, %rax
	jne bad_word
	movq $0, (%rdi)
	add $8, %rdi
	jmp 6b
4:	cmp %r13, %rdi                     # the rest: check, then rewrite
	jae 7f
	mov (%rdi), %rax
	xor %rdx, %rax
	cmp %rdi, %rax
	jne bad_word
	xor %r8, %rax                      # a ^ new
	mov %rax, (%rdi)
	add $8, %rdi
	jmp 4b
7:
	incq pass_count(%rip)
	mov pass_count(%rip), %rax
	cmp zero_pass(%rip), %rax
	jne 8f
	cmp %r12, zero_end(%rip)
	jbe 8f
	lea msg_zeroed(%rip), %rdi
	call puts
	mov zero_end(%rip), %rdi
	sub %r12, %rdi
	shr $12, %rdi
	call put_dec
	lea msg_pages(%rip), %rdi
	call puts
8:	lea msg_ok(%rip), %rdi
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
