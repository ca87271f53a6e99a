"""`tokenvault`: the vault for the people who use it (analysts, the privacy officer, the security team).

tokenvault --stack .stack --as analyst reveal ip_… --purpose CASE-123
tokenvault --stack .stack --as analyst reveal --query "SELECT * FROM user_logins" --purpose CASE-123
tokenvault --stack .stack --as privacy-officer erase ip_… --user-id u-118 --purpose GDPR-118 --yes
tokenvault --stack .stack --as security status
"""
