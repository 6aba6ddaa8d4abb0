"""Scam messages of our own and the disguises a scammer would put on them.

Written for this suite (no dataset copied). Each case has one variant per trick, and a
"combined" one that mixes several. Look-alike and invisible characters are written as
escapes so a reader sees them:

  \\u0430 \\u0435 \\u043e \\u0440 \\u0441 \\u0456   Cyrillic a e o p c i
  \\u0410 \\u041d \\u041e ...                      Cyrillic capitals A H O ...
  \\u200b \\u200c \\u200d \\u2060 \\u00ad          zero-width space, non-joiner, joiner,
                                        word joiner, soft hyphen

Full-width letters (ｐａｙ) are visible, so they are written as they are.
"""

from fraud.quality.evasion import EvasionCase

CASES = [
    EvasionCase(
        "delivery",
        "ParcelGo: your parcel is held at our depot because of an unpaid £1.99 shipping fee. "
        "Pay now at https://parcelgo-redeliver.com to release it.",
        {
            "homoglyph": "P\u0430rcelGo: your p\u0430rcel is held at our dep\u043et because of an "
            "unp\u0430id £1.99 shipping fee. P\u0430y now at https://p\u0430rcelgo-redeliver.com "
            "to release it.",
            "zero_width": "Parcel\u200bGo: your par\u200ccel is held at our depot because of an "
            "un\u200dpaid £1.99 ship\u2060ping fee. Pay\u200b now at "
            "https://parcelgo-redeliver.com to release it.",
            "spacing": "ParcelGo: your parcel is held at our depot because of an u n p a i d "
            "£1.99 shipping fee. P a y  n o w at https://parcelgo-redeliver.com to release it.",
            "leet": "ParcelGo: your parc3l is h3ld at our dep0t because of an unpa1d £1.99 "
            "shipping f33. Pay now at https://parcelgo-redeliver.com to release it.",
            "fullwidth": "ParcelGo: your parcel is held at our depot because of an ｕｎｐａｉｄ "
            "£1.99 shipping fee. Ｐａｙ ｎｏｗ at ｈｔｔｐｓ://parcelgo-redeliver.com "
            "to release it.",
            "url": "ParcelGo: your parcel is held at our depot because of an unpaid £1.99 "
            "shipping fee. Pay now at hxxps://parcelgo-redeliver[.]com to release it.",
            "combined": "P\u0430rcelGo: your parc3l is h\u200beld at our depot because of an "
            "u n p a i d £1.99 shipping fee. Ｐａｙ now at hxxps://p\u0430rcelgo-redeliver[.]com "
            "to release it.",
        },
    ),
    EvasionCase(
        "bank",
        "Northgate Bank: we blocked a payment of £640 from your account. If this was not you, "
        "verify your identity at https://northgate-secure-check.com/verify within 2 hours.",
        {
            "homoglyph": "N\u043erthgate B\u0430nk: we blocked a payment of £640 from your "
            "\u0430ccount. If this was not you, v\u0435rify your identity at "
            "https://n\u043erthgate-secure-check.com/verify within 2 hours.",
            "zero_width": "North\u200bgate Bank: we bl\u200docked a pay\u200cment of £640 from "
            "your acc\u200bount. If this was not you, ver\u2060ify your identity at "
            "https://northgate-secure-check.com/verify within 2 hours.",
            "spacing": "Northgate Bank: we b.l.o.c.k.e.d a payment of £640 from your account. "
            "If this was not you, v e r i f y  y o u r  i d e n t i t y at "
            "https://northgate-secure-check.com/verify within 2 hours.",
            "leet": "N0rthgate B4nk: we bl0cked a paym3nt of £640 from your acc0unt. If this "
            "was not you, ver1fy your 1dent1ty at https://northgate-secure-check.com/verify "
            "within 2 hours.",
            "fullwidth": "Northgate Bank: we blocked a payment of £640 from your account. If "
            "this was not you, ｖｅｒｉｆｙ ｙｏｕｒ ｉｄｅｎｔｉｔｙ at "
            "https://northgate-secure-check.com/verify within ２ hours.",
            "url": "Northgate Bank: we blocked a payment of £640 from your account. If this was "
            "not you, verify your identity at hxxps://northgate-secure-check(dot)com/verify "
            "within 2 hours.",
            "combined": "N\u043erthgate B4nk: we bl\u200bocked a payment of £640 from your "
            "account. If this was not you, v e r i f y your identity at "
            "hxxps://northgate-secure-check[.]com/verify within 2 hours.",
        },
    ),
    EvasionCase(
        "tax_refund",
        "HMRC: you are due a tax refund of £318.40. Claim it today by confirming your card "
        "details at hmrc-refund-online.co.uk",
        {
            "homoglyph": "\u041d\u041cR\u0421: you are due a tax r\u0435fund of £318.40. "
            "Cl\u0430im it today by confirming your c\u0430rd details at hmrc-refund-online.co.uk",
            "zero_width": "HM\u200bRC: you are due a tax re\u200bfund of £318.40. Cla\u200cim it "
            "today by confirming your card de\u200dtails at hmrc-refund-online.co.uk",
            "spacing": "HMRC: you are due a t a x  r e f u n d of £318.40. Claim it today by "
            "confirming your c-a-r-d details at hmrc-refund-online.co.uk",
            "leet": "HMRC: you are due a t4x r3fund of £318.40. Cl41m it today by c0nfirming "
            "your card d3tails at hmrc-refund-online.co.uk",
            "fullwidth": "ＨＭＲＣ: you are due a ｔａｘ ｒｅｆｕｎｄ of £３１８.４０. "
            "Claim it today by confirming your card details at hmrc-refund-online.co.uk",
            "url": "HMRC: you are due a tax refund of £318.40. Claim it today by confirming your "
            "card details at hmrc-refund-online [.] co [.] uk",
            "combined": "\u041dMRC: you are due a t4x r\u200befund of £318.40. C l a i m it today "
            "by confirming your card details at hmrc-refund-online(.)co(.)uk",
        },
    ),
    EvasionCase(
        "lottery",
        "Congratulations! Your mobile number has won £2,500 in the Summer Prize Draw. To claim "
        "your prize, reply with your bank details and pay a £15 release fee.",
        {
            "homoglyph": "C\u043engratulations! Your mobile number has w\u043en £2,500 in the "
            "Summer \u0420rize Dr\u0430w. To claim your pr\u0456ze, reply with your b\u0430nk "
            "details and pay a £15 rel\u0435ase fee.",
            "zero_width": "Congrat\u200bulations! Your mobile number has won £2,500 in the "
            "Summer Pri\u200cze Draw. To cla\u200bim your prize, reply with your bank "
            "de\u200dtails and pay a £15 release fee.",
            "spacing": "C o n g r a t u l a t i o n s! Your mobile number has won £2,500 in the "
            "Summer Prize Draw. To claim your prize, reply with your bank details and pay a £15 "
            "r e l e a s e  f e e.",
            "leet": "C0ngratulations! Your mobile number has w0n £2,500 in the Summer Pr1ze "
            "Draw. To cl4im your pr1z3, reply with your b4nk details and pay a £15 rel3ase fee.",
            "fullwidth": "Ｃｏｎｇｒａｔｕｌａｔｉｏｎｓ！ Your mobile number has won "
            "£２,５００ in the Summer Prize Draw. To claim your prize, reply with your bank "
            "details and pay a £15 release fee.",
            "combined": "C\u043engr4tulations! Your mobile number has w\u200bon £2,500 in the "
            "Summer P r i z e  D r a w. To claim your prize, reply with your b4nk details and "
            "pay a £15 release fee.",
        },
    ),
    EvasionCase(
        "impersonation",
        "Hi Mum, it's me, I dropped my phone in the sink and this is my new number. Can you "
        "send £180 to my friend's account today? I'll pay you back Friday.",
        {
            "homoglyph": "Hi Mum, it's me, I dr\u043epped my ph\u043ene in the sink and this is "
            "my new numb\u0435r. Can you s\u0435nd £180 to my friend's \u0430ccount today? I'll "
            "pay you back Friday.",
            "zero_width": "Hi M\u200bum, it's me, I dropped my ph\u200cone in the sink and this "
            "is my new num\u200bber. Can you se\u200dnd £180 to my friend's acc\u2060ount today? "
            "I'll pay you back Friday.",
            "spacing": "Hi Mum, it's me, I dropped my phone in the sink and this is my "
            "n e w  n u m b e r. Can you send £180 to my friend's a c c o u n t today? I'll pay "
            "you back Friday.",
            "leet": "Hi Mum, it's me, I dr0pped my ph0ne in the sink and this is my n3w numb3r. "
            "Can you s3nd £180 to my fr13nd's acc0unt today? I'll pay you back Friday.",
            "fullwidth": "Ｈｉ Ｍｕｍ, it's me, I dropped my phone in the sink and this is my new "
            "number. Can you send £１８０ to my friend's account today? I'll pay you back Friday.",
            "combined": "Hi Mum, it's me, I dr0pped my ph\u043ene in the sink and this is my "
            "n e w  n u m b e r. Can you s\u200bend £180 to my friend's acc0unt today? I'll pay "
            "you back Friday.",
        },
    ),
    EvasionCase(
        "investment",
        "Turn £250 into £5,000 in a week with our Bitcoin trading bot. Guaranteed profit, zero "
        "risk. Join now at https://cryptoprofit-club.net before places run out.",
        {
            "homoglyph": "Turn £250 into £5,000 in a week with our Bitc\u043ein tr\u0430ding "
            "bot. Gu\u0430ranteed pr\u043efit, z\u0435ro risk. Join now at "
            "https://crypt\u043eprofit-club.net before places run out.",
            "zero_width": "Turn £250 into £5,000 in a week with our Bit\u200bcoin trad\u200cing "
            "bot. Guaran\u200bteed pro\u200dfit, zero risk. Join now at "
            "https://cryptoprofit-club.net before places run out.",
            "spacing": "Turn £250 into £5,000 in a week with our B i t c o i n trading bot. "
            "G.u.a.r.a.n.t.e.e.d profit, zero risk. Join now at https://cryptoprofit-club.net "
            "before places run out.",
            "leet": "Turn £250 into £5,000 in a week with our B1tc01n trad1ng bot. Gu4r4nt33d "
            "pr0fit, z3ro r1sk. Join now at https://cryptoprofit-club.net before places run out.",
            "fullwidth": "Turn £２５０ into £５,０００ in a week with our Bitcoin trading bot. "
            "Ｇｕａｒａｎｔｅｅｄ profit, zero risk. Join now at https://cryptoprofit-club.net "
            "before places run out.",
            "url": "Turn £250 into £5,000 in a week with our Bitcoin trading bot. Guaranteed "
            "profit, zero risk. Join now at hxxps://cryptoprofit-club[.]net before places run "
            "out.",
            "combined": "Turn £250 into £5,000 in a week with our B1tc\u043ein trading bot. "
            "G u a r a n t e e d profit, z\u200bero risk. Join now at "
            "hxxps[:]//cryptoprofit-club[.]net before places run out.",
        },
    ),
    EvasionCase(
        "tech_support",
        "Microsoft Security Alert: your computer is infected with a virus and your files are at "
        "risk. Call our certified technicians now on 0800 046 1234 to fix it.",
        {
            "homoglyph": "Micr\u043es\u043eft Security Alert: your c\u043emputer is infected "
            "with a virus and your files are at risk. Call our certified technici\u0430ns now on "
            "0800 046 1234 to fix it.",
            "zero_width": "Micro\u200bsoft Secu\u200crity Alert: your compu\u200bter is "
            "inf\u200dected with a vi\u00adrus and your files are at risk. Call our certified "
            "technicians now on 0800 046 1234 to fix it.",
            "spacing": "Microsoft Security Alert: your computer is i n f e c t e d with a "
            "v-i-r-u-s and your files are at risk. C a l l our certified technicians now on "
            "0800 046 1234 to fix it.",
            "leet": "M1cr0s0ft S3curity Al3rt: your c0mput3r is 1nf3ct3d with a v1rus and your "
            "files are at risk. Call our certified technicians now on 0800 046 1234 to fix it.",
            "fullwidth": "Ｍｉｃｒｏｓｏｆｔ Ｓｅｃｕｒｉｔｙ Ａｌｅｒｔ: your computer is "
            "infected with a virus and your files are at risk. Call our certified "
            "technicians now on ０８００ ０４６ １２３４ to fix it.",
            "combined": "M\u0456cr0soft Security Alert: your computer is i n f e c t e d with a "
            "v\u200birus and your files are at risk. Call our certified technicians now on "
            "０８００ 046 1234 to fix it.",
        },
    ),
    EvasionCase(
        "job_offer",
        "We are hiring! Work from home and earn £300 a day liking posts online. No experience "
        "needed. Message our recruiter on WhatsApp to start today.",
        {
            "homoglyph": "We are hiring! W\u043erk from h\u043eme and e\u0430rn £300 a day "
            "liking p\u043ests online. No experience needed. Mess\u0430ge our recruiter on "
            "Wh\u0430tsApp to start today.",
            "zero_width": "We are hir\u200bing! Work from ho\u200cme and ea\u200brn £300 a day "
            "liking posts on\u200dline. No experience needed. Message our recruiter on "
            "Whats\u2060App to start today.",
            "spacing": "We are h i r i n g! Work from home and e a r n £300 a day liking posts "
            "online. No experience needed. Message our recruiter on W.h.a.t.s.A.p.p to start "
            "today.",
            "leet": "We are h1r1ng! W0rk from h0me and e4rn £300 a day l1king p0sts 0nl1ne. No "
            "exp3rience needed. Message our recruiter on Wh4tsApp to start today.",
            "fullwidth": "Ｗｅ ａｒｅ ｈｉｒｉｎｇ！ Work from home and earn £３００ a day liking "
            "posts online. No experience needed. Message our recruiter on WhatsApp to start "
            "today.",
            "combined": "We are h1ring! W\u043erk from home and e a r n £300 a day liking posts "
            "online. No exp\u200berience needed. Message our recruiter on Ｗｈａｔｓ\u0410pp to "
            "start today.",
        },
    ),
    EvasionCase(
        "romance",
        "My darling, I am stuck at the airport in Lagos and they will not let me fly home until "
        "I pay the customs fee. Please send me $900 by Western Union, I love you.",
        {
            "homoglyph": "My d\u0430rling, I am stuck at the \u0430irport in Lagos and they will "
            "not let me fly home until I pay the cust\u043ems fee. Please s\u0435nd me $900 by "
            "W\u0435stern Uni\u043en, I love you.",
            "zero_width": "My dar\u200bling, I am stuck at the air\u200cport in Lagos and they "
            "will not let me fly home until I pay the cus\u200btoms fee. Please send me $900 by "
            "West\u200dern Union, I love you.",
            "spacing": "My darling, I am stuck at the airport in Lagos and they will not let me "
            "fly home until I pay the c u s t o m s  f e e. Please send me $900 by "
            "W e s t e r n  U n i o n, I love you.",
            "leet": "My d4rling, I am stuck at the 41rp0rt in Lagos and they will not let me fly "
            "home until I pay the cust0ms f33. Please s3nd me $900 by W3stern Un10n, I love you.",
            "fullwidth": "My darling, I am stuck at the airport in Lagos and they will not let "
            "me fly home until I pay the customs fee. Ｐｌｅａｓｅ ｓｅｎｄ ｍｅ ＄９００ "
            "by Western Union, I love you.",
            "combined": "My d4rling, I am stuck at the airp\u043ert in Lagos and they will not "
            "let me fly home until I pay the c u s t o m s fee. Please se\u200bnd me $900 by "
            "Ｗｅｓｔｅｒｎ Union, I love you.",
        },
    ),
    EvasionCase(
        "streaming",
        "StreamFlix: your membership has been suspended because we could not process your "
        "payment. Update your billing details at http://streamflix-account-billing.com to "
        "avoid losing access.",
        {
            "homoglyph": "Str\u0435amFlix: your m\u0435mbership has been susp\u0435nded because "
            "we could not process your p\u0430yment. Upd\u0430te your billing details at "
            "http://str\u0435amflix-account-billing.com to avoid losing access.",
            "zero_width": "Stream\u200bFlix: your member\u200cship has been sus\u200bpended "
            "because we could not process your pay\u200dment. Update your bil\u2060ling details "
            "at http://streamflix-account-billing.com to avoid losing access.",
            "spacing": "StreamFlix: your membership has been s u s p e n d e d because we could "
            "not process your payment. U-p-d-a-t-e your billing details at "
            "http://streamflix-account-billing.com to avoid losing access.",
            "leet": "Str34mFl1x: your m3mb3rship has been susp3nd3d because we could not process "
            "your p4ym3nt. Upd4t3 your b1ll1ng details at http://streamflix-account-billing.com "
            "to avoid losing access.",
            "fullwidth": "ＳｔｒｅａｍＦｌｉｘ: your membership has been suspended because we "
            "could not process your payment. Ｕｐｄａｔｅ ｙｏｕｒ ｂｉｌｌｉｎｇ details at "
            "http://streamflix-account-billing.com to avoid losing access.",
            "url": "StreamFlix: your membership has been suspended because we could not process "
            "your payment. Update your billing details at hxxp://streamflix-account-billing . com "
            "to avoid losing access.",
            "combined": "Str\u0435amFlix: your membership has been s u s p e n d e d because we "
            "could not process your p4yment. Update your billing details at "
            "hxxp://streamflix-account-billing[.]com to avoid losing access.",
        },
    ),
    EvasionCase(
        "road_toll",
        "Final notice: you have an unpaid road toll charge of £4.50. Pay before midnight at "
        "https://tollroad-payment.uk or a penalty of £80 will be added.",
        {
            "homoglyph": "Fin\u0430l n\u043etice: you have an unp\u0430id road toll ch\u0430rge "
            "of £4.50. Pay before midnight at https://tollro\u0430d-payment.uk or a pen\u0430lty "
            "of £80 will be added.",
            "zero_width": "Final no\u200btice: you have an un\u200cpaid road toll char\u200bge of "
            "£4.50. Pay before mid\u200dnight at https://tollroad-payment.uk or a pen\u200balty "
            "of £80 will be added.",
            "spacing": "F i n a l  n o t i c e: you have an unpaid road toll charge of £4.50. Pay "
            "before midnight at https://tollroad-payment.uk or a p.e.n.a.l.t.y of £80 will be "
            "added.",
            "leet": "F1nal n0t1ce: you have an unp41d r04d t0ll ch4rge of £4.50. Pay before "
            "m1dn1ght at https://tollroad-payment.uk or a p3n4lty of £80 will be added.",
            "fullwidth": "Ｆｉｎａｌ ｎｏｔｉｃｅ: you have an unpaid road toll charge of "
            "£４.５０. Pay before midnight at https://tollroad-payment.uk or a penalty of "
            "£８０ will be added.",
            "url": "Final notice: you have an unpaid road toll charge of £4.50. Pay before "
            "midnight at hxxps://tollroad-payment[.]uk or a penalty of £80 will be added.",
            "combined": "F1n\u0430l notice: you have an u n p a i d road toll charge of £4.50. "
            "Pay before midnight at hxxps://tollroad-payment(dot)uk or a pen\u200balty of £80 "
            "will be added.",
        },
    ),
    EvasionCase(
        "security_code",
        "Northgate Bank fraud team: we have stopped a suspicious transfer. Read us the 6-digit "
        "security code we just sent you so we can cancel it.",
        {
            "homoglyph": "N\u043erthgate B\u0430nk fraud team: we have stopped a "
            "suspici\u043eus transfer. Read us the 6-digit s\u0435curity c\u043ede we just sent "
            "you so we can cancel it.",
            "zero_width": "Northgate Bank fr\u200baud team: we have stopped a suspi\u200ccious "
            "trans\u200bfer. Read us the 6-digit secu\u200drity code we just sent you so we can "
            "cancel it.",
            "spacing": "Northgate Bank fraud team: we have stopped a s u s p i c i o u s "
            "transfer. Read us the 6-digit s-e-c-u-r-i-t-y c-o-d-e we just sent you so we can "
            "cancel it.",
            "leet": "N0rthgate B4nk fr4ud t34m: we have st0pped a susp1c10us transfer. Read us "
            "the 6-digit s3cur1ty c0d3 we just sent you so we can cancel it.",
            "fullwidth": "Northgate Bank fraud team: we have stopped a suspicious transfer. "
            "Ｒｅａｄ ｕｓ ｔｈｅ ６-ｄｉｇｉｔ ｓｅｃｕｒｉｔｙ ｃｏｄｅ we just sent you "
            "so we can cancel it.",
            "combined": "N\u043erthgate B4nk fraud team: we have stopped a s u s p i c i o u s "
            "transfer. Read us the 6-digit secu\u200brity c0de we just sent you so we can cancel "
            "it.",
        },
    ),
    EvasionCase(
        "gift_cards",
        "Your Amazon order could not be completed. To confirm your account, buy two £100 gift "
        "cards and send us the codes by email.",
        {
            "homoglyph": "Your \u0410m\u0430zon \u043erder could not be completed. To confirm "
            "your \u0430ccount, buy two £100 gift c\u0430rds and send us the c\u043edes by email.",
            "zero_width": "Your Ama\u200bzon order could not be com\u200cpleted. To confirm your "
            "ac\u200bcount, buy two £100 gift\u200d cards and send us the codes by em\u2060ail.",
            "spacing": "Your Amazon order could not be completed. To confirm your account, buy "
            "two £100 g i f t  c a r d s and send us the c.o.d.e.s by email.",
            "leet": "Your Am4z0n 0rd3r could not be c0mpl3t3d. To confirm your acc0unt, buy two "
            "£100 g1ft c4rds and send us the c0d3s by 3ma1l.",
            "fullwidth": "Your Ａｍａｚｏｎ order could not be completed. To confirm your account, "
            "buy two £１００ ｇｉｆｔ ｃａｒｄｓ and send us the codes by email.",
            "combined": "Your Am4zon \u043erder could not be completed. To confirm your account, "
            "buy two £100 g i f t  c a r d s and send us the co\u200bdes by ｅｍａｉｌ.",
        },
    ),
    EvasionCase(
        "loan",
        "You are pre-approved for a £5,000 loan with no credit check. Click here to get the "
        "money in your account within 10 minutes: https://quick-cash-loans.net/apply",
        {
            "homoglyph": "You are pre-appr\u043eved for a £5,000 l\u043ean with no cr\u0435dit "
            "check. Cli\u0441k here to get the m\u043eney in your account within 10 minutes: "
            "https://quick-c\u0430sh-loans.net/apply",
            "zero_width": "You are pre-ap\u200bproved for a £5,000 lo\u200can with no "
            "cre\u200bdit check. Cl\u200dick here to get the mo\u2060ney in your account within "
            "10 minutes: https://quick-cash-loans.net/apply",
            "spacing": "You are pre-approved for a £5,000 loan with no credit check. "
            "C l i c k  h e r e to get the money in your account within 10 minutes: "
            "https://quick-cash-loans.net/apply",
            "leet": "You are pre-appr0ved for a £5,000 l04n with no cr3d1t ch3ck. Cl1ck h3r3 to "
            "get the m0n3y in your account within 10 minutes: https://quick-cash-loans.net/apply",
            "fullwidth": "You are pre-approved for a £５,０００ loan with no credit check. "
            "Ｃｌｉｃｋ ｈｅｒｅ to get the money in your account within １０ minutes: "
            "https://quick-cash-loans.net/apply",
            "url": "You are pre-approved for a £5,000 loan with no credit check. Click here to "
            "get the money in your account within 10 minutes: "
            "hxxps://quick-cash-loans[dot]net/apply",
            "combined": "You are pre-appr0ved for a £5,000 l\u043ean with no credit check. "
            "C l i c k  h e r e to get the money in your account within 10 minutes: "
            "hxxps://quick-cash-loans[.]net/apply",
        },
    ),
    EvasionCase(
        "energy_rebate",
        "Ofgem: you are eligible for a £400 energy bill rebate. Apply now with your bank card "
        "details at https://energy-rebate-claim.com/apply to receive it this week.",
        {
            "homoglyph": "\u041efgem: you are eligible for a £400 en\u0435rgy bill r\u0435bate. "
            "\u0410pply now with your b\u0430nk card details at "
            "https://energy-reb\u0430te-claim.com/apply to receive it this week.",
            "zero_width": "Ofg\u200bem: you are eli\u200cgible for a £400 ener\u200bgy bill "
            "re\u200dbate. Apply now with your bank card de\u2060tails at "
            "https://energy-rebate-claim.com/apply to receive it this week.",
            "spacing": "Ofgem: you are e l i g i b l e for a £400 energy bill r e b a t e. "
            "A.p.p.l.y n.o.w with your bank card details at https://energy-rebate-claim.com/apply "
            "to receive it this week.",
            "leet": "0fg3m: you are 3l1g1bl3 for a £400 en3rgy bill r3b4t3. 4pply now with your "
            "b4nk card details at https://energy-rebate-claim.com/apply to receive it this week.",
            "fullwidth": "Ｏｆｇｅｍ: you are ｅｌｉｇｉｂｌｅ for a £４００ energy bill rebate. "
            "Apply now with your bank card details at https://energy-rebate-claim.com/apply "
            "to receive it this week.",
            "url": "Ofgem: you are eligible for a £400 energy bill rebate. Apply now with your "
            "bank card details at hxxps://energy-rebate-claim . com/apply to receive it this "
            "week.",
            "combined": "\u041efgem: you are eligible for a £400 en3rgy bill r e b a t e. Apply "
            "now with your b\u200bank card details at hxxps://energy-rebate-claim(dot)com/apply "
            "to receive it this week.",
        },
    ),
]
