namespace ds4::text { int text_library_anchor = 0; }
