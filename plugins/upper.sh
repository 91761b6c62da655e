#!/bin/sh
# Example CGI program in shell: answers the posted body in upper case.
# Dropped in plugins/ as an executable, it serves POST /upper. Corners cut: ASCII letters only.
printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n'
tr 'a-z' 'A-Z'
