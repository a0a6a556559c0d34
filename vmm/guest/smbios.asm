# smbios.asm - the SMBIOS reader guest.
#
# Protocol (COM1):
#   scans 0xF0000..0xFFFFF on 16-byte boundaries for a 32-bit SMBIOS 2.x entry
#   point ("_SM_", length 0x1E..0x20, byte sum 0), walks the structure table it
#   points to until the first type 1 (System Information) structure, prints
#     "smbios manufacturer=<s> product=<s> version=<s> serial=<s>\n"
#   with the strings of that structure (empty for string number 0), and exits
#   with status 0. Without a valid entry point or a type 1 structure before
#   type 127 or the end of the table, it prints "smbios not found\n" and exits
#   with status 1.
#
# Command line: none besides tsc_khz= (read by common.inc, unused here).

	.include "common.inc"

	.set SCAN_START, 0xF0000
	.set SCAN_END,   0x100000

	.section .rodata
msg_head:    .asciz "smbios manufacturer="
msg_product: .asciz " product="
msg_version: .asciz " version="
msg_serial:  .asciz " serial="
msg_none:    .asciz "smbios not found\n"

	.text
# Registers in main: rbx = current structure, r12 = end of the table.
main:
	# Find the entry point.
	mov $SCAN_START, %ebx
1:	cmpl $0x5f4d535f, (%rbx)           # "_SM_" little-endian
	jne 3f
	movzbl 5(%rbx), %ecx               # entry point length
	cmp $0x1e, %ecx
	jb 3f
	cmp $0x20, %ecx
	ja 3f
	xor %eax, %eax                     # checksum: all bytes sum to 0 (mod 256)
	xor %edx, %edx
2:	add (%rbx,%rdx), %al
	inc %edx
	cmp %ecx, %edx
	jb 2b
	test %al, %al
	jz found_ep
3:	add $16, %ebx
	cmp $SCAN_END, %ebx
	jb 1b
	jmp not_found

found_ep:
	movzwl 0x16(%rbx), %r12d           # structure table length
	mov 0x18(%rbx), %ebx               # structure table address (32-bit)
	add %rbx, %r12

	# Walk: each structure is a formatted area of length byte[1] followed by
	# a string set ending in two NUL bytes.
walk:
	lea 4(%rbx), %rax
	cmp %r12, %rax
	ja not_found
	movzbl (%rbx), %eax                # type
	movzbl 1(%rbx), %ecx               # formatted length
	cmp $4, %ecx
	jb not_found
	cmp $127, %eax                     # end-of-table
	je not_found
	cmp $1, %eax
	jne 4f
	cmp $8, %ecx                       # type 1 needs the four string numbers
	jae found_type1
4:	add %rcx, %rbx                     # skip the string set: find "\0\0"
5:	lea 1(%rbx), %rax
	cmp %r12, %rax
	jae not_found
	cmpw $0, (%rbx)
	je 6f
	inc %rbx
	jmp 5b
6:	add $2, %rbx
	jmp walk

found_type1:
	lea msg_head(%rip), %rdi
	call puts
	mov $4, %edi                       # byte 4: manufacturer string number
	call put_string
	lea msg_product(%rip), %rdi
	call puts
	mov $5, %edi                       # byte 5: product name
	call put_string
	lea msg_version(%rip), %rdi
	call puts
	mov $6, %edi                       # byte 6: version
	call put_string
	lea msg_serial(%rip), %rdi
	call puts
	mov $7, %edi                       # byte 7: serial number
	call put_string
	call nl
	xor %eax, %eax
	ret

not_found:
	lea msg_none(%rip), %rdi
	jmp die

# put_string(rdi = offset of a string-number byte in the structure at rbx):
# writes that string of the structure's string set, bounded by the table end
# r12; string number 0 (or one past the set) writes nothing.
put_string:
	push %rbp
	movzbl (%rbx,%rdi), %ecx           # string number, 1-based
	test %ecx, %ecx
	jz 9f
	movzbl 1(%rbx), %ebp
	add %rbx, %rbp                     # first string
1:	cmp %r12, %rbp
	jae 9f
	cmpb $0, (%rbp)                    # empty string here = end of the set
	je 9f
	dec %ecx
	jz 3f
2:	cmp %r12, %rbp                     # skip one string
	jae 9f
	cmpb $0, (%rbp)
	lea 1(%rbp), %rbp
	jne 2b
	jmp 1b
3:	cmp %r12, %rbp                     # write this string
	jae 9f
	movzbl (%rbp), %edi
	test %edi, %edi
	jz 9f
	call putc
	inc %rbp
	jmp 3b
9:	pop %rbp
	ret
